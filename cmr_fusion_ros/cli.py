"""`cmr-fusion`: the one command-line entry point.

Each sub-command lives in ``cmr_fusion_ros/commands/<name>.py`` and exposes ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``cmr-fusion --help`` stays fast and a
command's heavy imports (open3d, torch, rclpy) never slow another one down.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cmr_fusion_ros.core.errors import CmrFusionError

# name -> module under cmr_fusion_ros.commands
COMMANDS: dict[str, str] = {
    "convert-check": "convert_check",
    "simulate": "simulate",
    "import": "import_data",
    "bench": "bench",
    "train": "train",
    "export": "export",
    "eval": "eval",
    "replay": "replay",
    "launch": "launch",
    "process": "process",
    "demo": "demo",
    "eval-events": "eval_events",
    "stress": "stress",
    "memory-server": "memory_server",
    "memory": "memory",
    "doctor": "doctor",
    "calibrate": "calibrate",
    "rig-params": "rig_params",
}

# one-line help per command, kept here so --help needs no imports
HELP: dict[str, str] = {
    "convert-check": "convert the real sensor samples to ROS messages and back, and report losses and timings",
    "simulate": "generate a synthetic town seen by camera, LiDAR and radar and record sessions as rosbag2 bags",
    "import": "convert real datasets (DGP scenes, PJLab single frames) into rosbag2 bags",
    "bench": "benchmarks: `bench memory` (scene memory vs raw FAISS), `bench pipeline` (live latency vs DDS floor), `bench offline` (real-time factor, encoder vs bare onnxruntime)",
    "train": "train the camera, LiDAR and radar encoders on bags with odometry (contrastive, all modality pairs)",
    "export": "export trained encoders to ONNX with a torch parity check, latency and model cards",
    "eval": "recall@1/5/10/1% of the encoders for all 9 query -> database modality pairs on two bags (and R@1 by "
            "heading gap)",
    "replay": "replay rosbag2 bags (sqlite3, mcap) on ROS 2 topics with the recorded timing, /clock, remaps and QoS",
    "launch": "start the fusion graph (all-in-one or split nodes) as child processes, without ros2 launch",
    "process": "process bags offline (no DDS, full speed): match events to JSONL and an mcap bag, plus a summary",
    "eval-events": "precision/recall of match events against ground-truth revisits, PR curve over the score threshold",
    "demo": "run the whole system on the sample bag: launch the graph, replay, print match events, summary + PNG",
    "stress": "reliability stress: `crash` (SIGKILL while writing the memory, reload, count lost entries), `overload`, `soak`",
    "memory-server": "run an embedded PostgreSQL + pgvector server for memory.store: postgres; prints `uri: ...`",
    "memory": "move memories: `memory export|import` between a local memory folder and a PostgreSQL memory; "
              "`memory grant` lets a robot's login role write and search",
    "doctor": "check a bag against the encoders' training data: per modality the input statistics (image size, field of "
              "view, points per scan, intensity scale, ground height) against the ranges in the model cards, the "
              "embedding spread (mean cosine between frames), a verdict and the next step",
    "calibrate": "fit, per query -> match modality pair, the probability that a best match with a given cosine is a "
                 "true revisit (logistic calibration) on validation bags, print it and write it into the model cards",
    "rig-params": "print a bag's sensor mounts and camera intrinsics as rig.* parameters for a live node",
}


def build_parser() -> argparse.ArgumentParser:
    from cmr_fusion_ros import __version__

    parser = argparse.ArgumentParser(prog="cmr-fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cmr-fusion {__version__} (ROS 2 package cmr_fusion_ros, "
                        f"messages cmr_fusion_msgs)", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        # argparse %-formats help strings always, descriptions only when they hold "%(prog)"
        p = sub.add_parser(name, help=HELP[name].replace("%", "%%"), description=HELP[name])
        p.set_defaults(_command=name)
        p.set_defaults(_lazy=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass finds the command; its module then adds its own arguments.
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        module = importlib.import_module(f"cmr_fusion_ros.commands.{COMMANDS[name]}")
        sub = argparse.ArgumentParser(prog=f"cmr-fusion {name}", description=module.HELP)
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except CmrFusionError as err:
            print(f"cmr-fusion {name}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"cmr-fusion {name}: interrupted", file=sys.stderr)
            return 130
    parser.parse_args(argv)  # prints help / usage errors
    return 2


if __name__ == "__main__":
    sys.exit(main())
