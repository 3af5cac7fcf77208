"""`cmr-fusion demo`: the main job end to end (launch, replay, events as they arrive, summary and a PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cmr_fusion_ros.cli_options import add_params_file

HELP = "run the whole system on the sample bag: launch the graph, replay, print match events, summary + PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", type=Path, default=None, help="bag to replay (default: the shipped sample bag)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default ./demo_out)")
    add_params_file(parser, "parameter file (default: config/demo.yaml)")
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the shipped models)")
    parser.add_argument("--rate", type=float, default=1.0, help="replay rate (default 1 = real time)")
    parser.add_argument("--radius", type=float, default=10.0, help="ground-truth radius of a true revisit (m)")


def default_bag() -> Path:
    from cmr_fusion_ros.core.errors import BagError
    from cmr_fusion_ros.paths import share_dir, source_root

    for root in (share_dir(), source_root()):
        found = sorted(p.parent for p in (root / "bags").glob("*/*/metadata.yaml")) + \
            sorted(p.parent for p in (root / "bags").glob("*/metadata.yaml"))
        if found:
            return found[0]
    raise BagError(str(source_root() / "bags"), "no sample bag found; pass --bag")


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.machine import machine_summary
    from cmr_fusion_ros.paths import config_file
    from cmr_fusion_ros.ros.demo import run_demo

    bag = args.bag or default_bag()
    params = args.params or config_file("demo.yaml")
    print(f"command: cmr-fusion demo --bag {bag} --out {args.out} --params {params} --rate {args.rate}")
    print(f"machine: {machine_summary()}")
    result = run_demo(bag, args.out, params=params, rate=args.rate, truth_radius_m=args.radius, models=args.models)
    print("\n=== summary ===")
    for line in result.summary_lines:
        print(line)
    return 0
