"""`cmr-fusion stress crash|overload|soak`: reliability stress runs that print the command, the machine and figures.

Thin over :mod:`cmr_fusion_ros.eval.stress` and :mod:`cmr_fusion_ros.ros.stress_runs`; each writes a JSON report (and the soak a PNG) into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

HELP = "reliability stress: `crash` (SIGKILL while writing the memory, reload, count lost entries), `overload`, `soak`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bag", type=Path, default=None, help="bag to run (default: the installed sample bag)")
    common.add_argument("--params", type=Path, default=None, help="parameter file (default: config/fusion.yaml)")
    common.add_argument("--models", type=Path, default=None, help="models folder (overrides encoders.models_dir)")
    common.add_argument("--out", type=Path, required=True, help="folder for the memory, logs and the report")

    c = sub.add_parser("crash", parents=[common], help="SIGKILL the offline pipeline at random moments while it "
                                                        "writes a persistent memory; reload and check after each kill")
    c.add_argument("--kills", type=int, default=50)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-delay", type=float, default=4.0, help="kill within this many seconds after the start")
    c.add_argument("--flush-interval", type=float, default=0.05, help="memory.persistence.flush_interval_s")
    c.add_argument("--snapshot-every", type=int, default=500, help="memory.persistence.snapshot_every_n")

    o = sub.add_parser("overload", parents=[common], help="fusion_node with slowed encoders, bag replayed faster")
    o.add_argument("--rate", type=float, default=2.0, help="replay rate (default 2: every sensor at twice its rate)")
    o.add_argument("--encoder-delay-ms", type=float, default=50.0, help="extra time per encoded frame")
    o.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: the whole bag)")

    s = sub.add_parser("soak", parents=[common], help="launch the graph, replay the bag in a loop, sample RSS and "
                                                      "latency")
    s.add_argument("--duration", type=float, required=True, help="seconds")
    s.add_argument("--interval", type=float, default=60.0, help="report interval (s)")
    s.add_argument("--max-entries", type=int, default=5000,
                   help="memory capacity during the soak (steady state; 0 = unlimited)")


def _defaults(args: argparse.Namespace) -> tuple[Path, Path]:
    from cmr_fusion_ros.paths import config_file, share_dir, source_root

    bag = args.bag
    if bag is None:
        bag = next((r / "bags" / "sample_town" / "session_00" for r in (share_dir(), source_root())
                    if (r / "bags" / "sample_town" / "session_00").is_dir()), None)
        if bag is None:
            from cmr_fusion_ros.core.errors import BagError

            raise BagError("bags/sample_town/session_00", "the sample bag is not installed; give --bag")
    return Path(bag), Path(args.params or config_file("fusion.yaml"))


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.eval import stress
    from cmr_fusion_ros.rosenv import apply_ros_defaults

    apply_ros_defaults()
    bag, params = _defaults(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "cmr-fusion stress " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("stress") + 1:]) \
        if "stress" in sys.argv else f"cmr-fusion stress {args.mode}"
    env = dict(os.environ)
    print(f"command: {command}")
    if args.mode == "crash":
        memory = out / "memory"
        if memory.exists():
            shutil.rmtree(memory)
        config = stress.stress_config(params, models=args.models, memory_dir=memory,
                                      flush_interval_s=args.flush_interval, snapshot_every_n=args.snapshot_every)
        argv = [sys.executable, "-m", "cmr_fusion_ros.eval.stress", "child", str(bag), "--params", str(params),
                "--memory", str(memory), "--flush-interval", str(args.flush_interval),
                "--snapshot-every", str(args.snapshot_every)] + (["--models", str(args.models)] if args.models else [])
        from tqdm import tqdm

        bar = tqdm(total=args.kills, unit="kill", desc="crash")

        def progress(k, rep):
            bar.update(1)
            bar.set_postfix(lost=rep.entries_lost, entries=rep.final_entries)

        report = stress.crash_stress(argv, memory, config.memory, kills=args.kills, seed=args.seed,
                                     max_delay_s=args.max_delay, env=env, command=command, progress=progress)
        bar.close()
        print(f"machine: {report.machine}")
        for line in report.lines():
            print(line)
        stress.write_json(report, out / "crash.json")
        print(f"wrote {out / 'crash.json'}")
        return 0 if report.ok else 1
    if args.mode == "overload":
        config = stress.stress_config(params, models=args.models, memory_dir=out / "memory")
        from cmr_fusion_ros.ros import stress_runs  # (rclpy only for the runs that need it)

        report = stress_runs.overload_run(bag, config, rate=args.rate, delay_s=args.encoder_delay_ms / 1e3,
                                          duration_s=args.duration, env=env, command=command)
        print(f"machine: {report.machine}")
        for line in report.lines():
            print(line)
        stress.write_json(report, out / "overload.json")
        print(f"wrote {out / 'overload.json'}")
        return 0
    # soak
    soak_params = stress.write_soak_params(params, out, max_entries=args.max_entries, models=args.models)
    from tqdm import tqdm

    bar = tqdm(total=round(args.duration), unit="s", desc="soak")

    def tick(t):
        bar.n = min(round(t), bar.total)
        bar.refresh()

    from cmr_fusion_ros.ros import stress_runs

    report = stress_runs.soak_run(bag, soak_params, duration_s=args.duration, interval_s=args.interval, env=env,
                                  command=command, progress=tick, log=out / "soak_launch.log")
    bar.close()
    print(f"machine: {report.machine}")
    for line in report.lines():
        print(line)
    stress.write_json(report, out / "soak.json")
    stress.plot_soak(report, out / "soak.png")
    print(f"wrote {out / 'soak.json'}, {out / 'soak.png'}")
    return 0 if not report.errors and report.launcher_exit == 0 else 1
