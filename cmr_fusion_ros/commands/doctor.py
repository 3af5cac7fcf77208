"""`cmr-fusion doctor BAG`: is this data like what the encoders were trained on? Statistics, spread, verdict."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from cmr_fusion_ros.commands.eval import add_modalities_argument, add_topic_arguments, topics_from_args

HELP = ("check a bag against the encoders' training data: per modality the input statistics (image size, field of "
        "view, points per scan, intensity scale, ground height) against the ranges in the model cards, the embedding "
        "spread (mean cosine between frames), a verdict and the next step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 bag(s) (sqlite3 or mcap)")
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the installed models)")
    parser.add_argument("--max-frames", type=int, default=200, metavar="N",
                        help="frames per modality inspected, spread evenly over the bag (default 200)")
    parser.add_argument("--json", type=Path, default=None, help="write the report(s) as JSON to this file")
    parser.add_argument("--derive-ranges", action="store_true",
                        help="instead: measure BAGs as training data and write their ranges into the cards of "
                             "--models (the shipped ones came from simulated training bags, see models/README.md)")
    add_modalities_argument(parser)
    add_topic_arguments(parser)


def models_and_command(args: argparse.Namespace, name: str):
    """(topics, models folder, encoders, the command line) for the commands that embed bags with --models."""
    from cmr_fusion_ros.core.encoder import load_encoders
    from cmr_fusion_ros.paths import models_dir

    topics = topics_from_args(args)
    folder = args.models or models_dir()
    encoders = load_encoders(folder, intra_op_threads=1)
    command = "cmr-fusion " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == [name] else f"cmr-fusion {name}"
    print(f"command: {command}")
    return topics, folder, encoders, command


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.bag.inventory import parse_modalities
    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.eval.doctor import derive_card_ranges, diagnose, inspect_bag

    if not 2 <= args.max_frames <= 100_000:
        raise ConfigError("--max-frames", args.max_frames, "an integer in 2..100000")
    topics, folder, encoders, command = models_and_command(args, "doctor")
    if args.derive_ranges:
        written = derive_card_ranges(args.bags, encoders, folder, topics, source=command, max_frames=args.max_frames)
        for m, r in written.items():
            print(f"{m}: {json.dumps(r['ranges'])}; embedding mean cosine {r.get('embedding_mean_cosine')}")
        print(f"wrote input_ranges into the cards in {folder}")
        return 0
    mods = parse_modalities(args.modalities)
    reports = []
    for bag in args.bags:
        report = diagnose(inspect_bag(bag, encoders, topics, modalities=mods, max_frames=args.max_frames),
                          encoders, str(folder))
        reports.append(report)
        for line in report.lines():
            print(line)
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(r.in_domain for r in reports) else 1
