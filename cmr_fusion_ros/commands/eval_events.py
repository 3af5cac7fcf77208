"""`cmr-fusion eval-events`: precision/recall of match events against the ground-truth revisits of the bags."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HELP = ("precision and recall of match events (events.jsonl of process or demo) against ground-truth revisits from "
        "the bags' odometry, a PR curve over the score threshold, PNG and JSON/markdown report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                        help="events JSONL files (process: OUT/events.jsonl; demo: demo_events.jsonl)")
    parser.add_argument("--truth", nargs="+", type=Path, required=True, metavar="BAG",
                        help="the bags the events came from (their odometry is the ground truth), in time order")
    parser.add_argument("--odom-topic", default="/odom", help="nav_msgs/Odometry topic of the truth (default /odom)")
    parser.add_argument("--radius", type=float, default=10.0, help="a true event / a revisit: within R metres (default 10)")
    parser.add_argument("--exclude-recent", type=float, default=30.0, metavar="S",
                        help="a revisit is a place seen at least S seconds earlier; use the run's "
                             "policy.exclude_recent_s (default 30)")
    parser.add_argument("--sample", type=float, default=0.2, metavar="S", help="truth sampling step (default 0.2 s)")
    parser.add_argument("--gap", type=float, default=1.0, metavar="S",
                        help="revisit instants closer than this form one revisit (default 1 s)")
    parser.add_argument("--slack", type=float, default=1.0, metavar="S",
                        help="an event detects a revisit within its window widened by S seconds (default 1)")
    parser.add_argument("--min-revisit", type=float, default=0.0, metavar="S",
                        help="ignore revisits shorter than S seconds, e.g. crossing an old path (default 0)")
    parser.add_argument("--max-window", type=float, default=10.0, metavar="S",
                        help="cut longer revisits into parts of at most S seconds, each counted as a place "
                             "(default 10; 0 = whole runs, a lenient recall)")
    parser.add_argument("--modalities", default=None, metavar="M1,M2",
                        help="count only events whose query and match modality are among these (comma-separated "
                             "subset of camera,lidar,radar; default: every event)")
    parser.add_argument("--score", choices=("score", "probability"), default="score",
                        help="what the threshold sweeps: the cosine (score, default) or the calibrated probability of "
                             "a true revisit (events without one are left out)")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--target-recall", type=float, default=0.7)
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="PR curve and map")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE.json",
                        help="report: FILE.json with every figure and FILE.md beside it")


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.eval.events import EvalSettings, TruthTracks, evaluate_events, load_events, plot_evaluation
    from cmr_fusion_ros.eval.report import Report, Table, versions, write_report

    command = "cmr-fusion eval-events " + shlex.join(_argv(args))
    settings = EvalSettings(radius_m=args.radius, exclude_recent_s=args.exclude_recent, sample_s=args.sample,
                            gap_s=args.gap, slack_s=args.slack, min_revisit_s=args.min_revisit,
                            max_window_s=args.max_window,
                            target_precision=args.target_precision, target_recall=args.target_recall)
    report = Report("Event-level evaluation", command, versions=versions())
    print(f"command: {command}")
    print(f"machine: {report.machine['summary']}; load average {report.machine['loadavg']}")
    events = load_events(args.results, args.score)
    if args.score != "score":
        print(f"threshold over the event field '{args.score}': {len(events)} events carry it")
    if args.modalities is not None:
        from cmr_fusion_ros.bag.inventory import parse_modalities

        keep = {m.value for m in parse_modalities(args.modalities)}
        n_all = len(events)
        events = [e for e in events if e.query_modality in keep and e.match_modality in keep]
        print(f"modalities {', '.join(sorted(keep))}: {len(events)} of {n_all} events kept")
    pairs = sorted({f"{e.query_modality}->{e.match_modality}" for e in events})
    print(f"pairs in the events: {', '.join(pairs) or 'none'}")
    truth = TruthTracks.from_bags(args.truth, args.odom_topic)
    result = evaluate_events(events, truth, settings)
    for line in result.lines():
        print(line)
    if args.plot:
        plot_evaluation(result, events, truth, args.plot, title=f"{', '.join(p.name for p in args.truth)}: "
                        f"{result.events} events, {result.revisits} revisits")
        print(f"wrote {args.plot}")
        report.images.append(str(args.plot))
    if args.json:
        report.settings = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
        report.settings["results"] = [str(p) for p in args.results]
        report.settings["truth"] = [str(p) for p in args.truth]
        report.summary = result.lines()
        report.figures = result.to_dict()
        step = max(1, len(result.curve) // 25)
        report.tables.append(Table("PR curve (every %d-th point)" % step, ["threshold", "precision", "recall", "events"],
                                   [[c["threshold"], c["precision"], c["recall"], c["events"]]
                                    for c in result.curve[::step]]))
        report.notes.append("definitions: cmr_fusion_ros/eval/events.py module docstring")
        js, md = write_report(report, args.json)
        print(f"wrote {js}, {md}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    out = [str(p) for p in args.results] + ["--truth", *map(str, args.truth)]
    if args.modalities is not None:
        out += ["--modalities", args.modalities]
    if args.score != "score":
        out += ["--score", args.score]
    for opt in ("odom_topic", "radius", "exclude_recent", "sample", "gap", "slack", "min_revisit", "max_window",
                "target_precision", "target_recall"):
        out += ["--" + opt.replace("_", "-"), str(getattr(args, opt))]
    if args.plot:
        out += ["--plot", str(args.plot)]
    if args.json:
        out += ["--json", str(args.json)]
    return out
