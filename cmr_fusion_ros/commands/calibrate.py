"""`cmr-fusion calibrate`: per modality pair, the probability that a match is a true revisit, from validation bags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cmr_fusion_ros.cli_options import add_no_progress
from cmr_fusion_ros.commands.eval import add_rig_arguments, add_topic_arguments

HELP = ("fit, per query -> match modality pair, the probability that a match candidate with a given cosine is a "
        "true revisit (logistic calibration) on validation bags, print it and write it into the model cards")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-bags", type=Path, nargs="+", required=True, metavar="DATABASE QUERIES",
                        help="pairs of bags of one place each: DATABASE QUERIES [DATABASE QUERIES ...]")
    parser.add_argument("--radius", type=float, default=10.0, help="a true revisit: within this many metres (default 10)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="samples from each query's K best matches, the candidates the policy can turn into "
                             "events (default 5, policy.top_k's default; 1: the best match only)")
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the installed models)")
    parser.add_argument("--write-cards", action="store_true",
                        help="write the calibration into the cards of --models (score_calibration; the runtime reads "
                             "it for policy.min_probability)")
    add_no_progress(parser)
    add_topic_arguments(parser)
    add_rig_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cmr_fusion_ros.commands.doctor import models_and_command
    from cmr_fusion_ros.commands.eval import rig_options_from_args
    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.eval.calibrate import fit_calibration, write_calibration
    from cmr_fusion_ros.eval.evaluate import embed_bag

    if len(args.val_bags) % 2:
        raise ConfigError("--val-bags", " ".join(map(str, args.val_bags)), "pairs of bags: DATABASE QUERIES ...")
    if not args.radius > 0:
        raise ConfigError("--radius", args.radius, "a number of metres > 0")
    if args.top_k < 1:
        raise ConfigError("--top-k", args.top_k, "a whole number >= 1")
    rig = rig_options_from_args(args)
    topics, _, encoders, command = models_and_command(args, "calibrate")
    places = []
    rejected: dict[str, int] = {}
    for db, q in zip(args.val_bags[::2], args.val_bags[1::2]):
        with tqdm(desc=f"embedding {db.parent.name}", unit=" msg", file=sys.stderr,
                  disable=args.no_progress) as bar:
            places.append((embed_bag(db, encoders, topics, progress=bar.update, rig=rig, rejected=rejected),
                           embed_bag(q, encoders, topics, progress=bar.update, rig=rig, rejected=rejected)))
    if rejected:
        print("messages the decoder rejected, skipped: " + ", ".join(f"{k} {n}" for k, n in rejected.items()))
    cal, samples = fit_calibration(places, args.radius, top_k=args.top_k)
    print(f"{'query -> match':<18}{'samples':>8}{'true':>6}{'a':>9}{'b':>9}{'cos@p.5':>9}{'cos@p.9':>9}"
          f"{'true|p>=.9':>12}")
    for (q, m), (scores, labels) in samples.items():
        c = cal.pairs.get((q, m))
        name = f"{q.value} -> {m.value}"
        if c is None:
            print(f"{name:<18}{len(scores):>8}{int(labels.sum()):>6}  not fitted (too few samples, or all one label)")
            continue
        sure = c(scores) >= 0.9
        frac = f"{labels[sure].mean():.2f} ({int(sure.sum())})" if sure.any() else "n/a (0)"
        print(f"{name:<18}{len(scores):>8}{int(labels.sum()):>6}{c.a:>9.3f}{c.b:>9.3f}{c.score_for(0.5):>9.3f}"
              f"{c.score_for(0.9):>9.3f}{frac:>12}")
    if args.write_cards:
        for path in write_calibration(cal, encoders, command):
            print(f"wrote score_calibration into {path}")
    return 0
