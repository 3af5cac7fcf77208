"""`cmr-fusion process`: a bag through the pipeline offline, at full speed, without DDS."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "process bags offline (no DDS, full speed): match events to JSONL and an mcap bag, plus a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories (sqlite3 or mcap), merged in time")
    parser.add_argument("--out", type=Path, required=True, help="output folder (events.jsonl, matches/, summary.json)")
    parser.add_argument("--params", type=Path, default=None,
                        help="ROS 2 parameter file (default: the installed config/fusion.yaml)")
    parser.add_argument("--node-name", default="fusion_node", help="node section to read from --params")
    parser.add_argument("--models", type=Path, default=None, help="models folder (overrides encoders.models_dir)")
    parser.add_argument("--memory", type=Path, default=None,
                        help="memory folder (default: OUT/memory; an existing memory is loaded and extended)")
    parser.add_argument("--namespace", default="/", help="namespace the relative topics resolve in (default /)")
    parser.add_argument("--radius", type=float, default=10.0, help="ground-truth radius of a true revisit (m)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--rig-from-bag", action="store_true",
                        help="take the sensor mounts and camera intrinsics the rig-aware inputs need from the first "
                             "bag's /tf_static and CameraInfo where the rig.* parameters give none (a live node reads "
                             "only the parameters: without this flag process gives the node's events)")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from cmr_fusion_ros.bag.offline import process_bags
    from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file
    from cmr_fusion_ros.paths import config_file

    params_path = args.params or config_file("fusion.yaml")
    config = FusionConfig.from_dict(load_parameter_file(params_path, args.node_name), source=str(params_path))
    memory_dir = str(args.memory) if args.memory else str(args.out / "memory")
    config = dataclasses.replace(
        config,
        memory=dataclasses.replace(config.memory, persistence=dataclasses.replace(
            config.memory.persistence, directory=memory_dir)),
        encoders=dataclasses.replace(config.encoders, models_dir=str(args.models)) if args.models else config.encoders,
    )
    print(f"command: cmr-fusion process {' '.join(map(str, args.bags))} --out {args.out} --params {params_path}")
    summary = process_bags(args.bags, config, out_dir=args.out, namespace=args.namespace, node_name=args.node_name,
                           truth_radius_m=args.radius, progress=not args.no_progress, rig_from_bag=args.rig_from_bag)
    for line in summary.lines():
        print(line)
    print(f"wrote {args.out / 'events.jsonl'}, {args.out / 'matches'} (mcap), {args.out / 'summary.json'}, "
          f"memory in {memory_dir}")
    return 0
