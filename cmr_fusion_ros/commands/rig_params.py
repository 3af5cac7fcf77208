"""`cmr-fusion rig-params`: the `rig.*` parameters (sensor mounts, camera intrinsics) a bag records, for a live node."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("print the rig.* parameters (sensor mounts from /tf_static, camera intrinsics from CameraInfo) of a bag as a "
        "parameter-file section, so a live node brings its sensors to the models' rig as eval and train do")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cmr_fusion_ros.commands.eval import add_topic_arguments

    parser.add_argument("bag", type=Path, help="rosbag2 directory recorded with the robot's sensors")
    parser.add_argument("--node-name", default="fusion_node", help="node section to print (default fusion_node)")
    parser.add_argument("--base-frame", default="base_link", help="vehicle frame of the mounts (default base_link)")
    add_topic_arguments(parser)


def rig_parameters(rig) -> dict[str, str]:
    """The ``rig.*`` mount and intrinsics strings of a :class:`~cmr_fusion_ros.core.rig.SensorRig` ('' = unknown)."""
    def mount(m) -> str:
        return "" if m is None else " ".join(f"{v:.6g}" for v in (*m.translation, *m.rotation))

    cam = rig.camera
    intr = "" if cam is None else " ".join(f"{v:.9g}" for v in (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy))
    return {"camera_mount": mount(rig.camera_mount), "lidar_mount": mount(rig.lidar_mount),
            "radar_mount": mount(rig.radar_mount), "camera_intrinsics": intr}


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.bag.rig_info import read_rig
    from cmr_fusion_ros.commands.eval import topics_from_args
    from cmr_fusion_ros.core.config import render_parameter_file

    rig = read_rig(args.bag, topics_from_args(args), args.base_frame)
    params = rig_parameters(rig)
    print(render_parameter_file({args.node_name: {"rig": params}},
                                f"rig.* of {args.bag} (cmr-fusion rig-params); '' = not recorded").rstrip())
    if rig.camera is not None and rig.camera.distortion:
        print(f"# note: the camera has lens distortion {list(rig.camera.distortion)}, which rig.camera_intrinsics "
              "cannot carry (eval and train read it from the bag's CameraInfo)")
    return 0
