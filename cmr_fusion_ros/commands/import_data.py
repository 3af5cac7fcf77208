"""`cmr-fusion import dgp|pjlab ...`: convert real datasets into rosbag2 bags with the simulator's conventions."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert real datasets (DGP scenes, PJLab single frames) into rosbag2 bags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    dgp = sub.add_parser("dgp", help="a DGP scene JSON, a scene directory, or a dataset directory (all its scenes)")
    dgp.add_argument("source", type=Path, help="scene_*.json, its directory, or a directory with scene_dataset*.json")
    dgp.add_argument("--out", required=True, type=Path,
                     help="output bag directory (for several scenes: one bag per scene under it)")
    dgp.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    dgp.add_argument("--raw-images", action="store_true", help="decode to sensor_msgs/Image rgb8 instead of "
                     "passing the JPEG/PNG bytes through as CompressedImage")
    dgp.add_argument("--main-camera", default=None,
                     help="camera published on /camera/... (default: the first camera of the calibration)")
    dgp.add_argument("--odom-step", type=float, default=0.05, metavar="S",
                     help="/odom between the datum stamps: interpolated poses every S seconds (default 0.05)")
    pj = sub.add_parser("pjlab", help="one PJLab SensorsCalibration frame: PCD LiDAR, CSV radar, image, JSON calibration")
    pj.add_argument("--out", required=True, type=Path, help="output bag directory")
    pj.add_argument("--lidar", type=Path, help="LiDAR .pcd (a frame takes any subset of --lidar, --radar, --image)")
    pj.add_argument("--radar", type=Path, help="radar .csv (Continental ARS408 objects or Delphi ESR tracks)")
    pj.add_argument("--image", type=Path, help="camera image (.jpg/.png)")
    pj.add_argument("--camera-intrinsic", type=Path, help="center_camera-intrinsic.json")
    pj.add_argument("--lidar-to-camera", type=Path, help="top_center_lidar-to-center_camera-extrinsic.json")
    pj.add_argument("--radar-to-lidar", type=Path, help="front_radar-to-top_center_lidar-extrinsic.json")
    pj.add_argument("--radar-to-camera", type=Path, help="radar-to-center_camera-extrinsic.json")
    pj.add_argument("--stamp-ns", type=int, default=1_750_000_000 * 10**9, help="stamp of every message (ns)")
    pj.add_argument("--max-capture-gap", type=float, default=1.0, metavar="S",
                    help="warn when the files' own capture times lie more than S seconds apart (default 1)")
    pj.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    pj.add_argument("--raw-images", action="store_true")


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.bag.importers import find_dgp_scenes, import_dgp, import_pjlab

    if args.format == "dgp":
        scenes = find_dgp_scenes(args.source)
        results = []
        for scene in scenes:
            out = args.out if len(scenes) == 1 else args.out / scene.parent.name
            results.append(import_dgp(scene, out, storage=args.storage, raw_images=args.raw_images,
                                      main_camera=args.main_camera, odom_step_s=args.odom_step))
    else:
        results = [import_pjlab(args.out, lidar=args.lidar, radar=args.radar, image=args.image,
                                camera_intrinsic=args.camera_intrinsic, lidar_to_camera=args.lidar_to_camera,
                                radar_to_lidar=args.radar_to_lidar, radar_to_camera=args.radar_to_camera,
                                stamp_ns=args.stamp_ns, storage=args.storage, raw_images=args.raw_images,
                                max_capture_gap_s=args.max_capture_gap)]
    for res in results:
        counts = ", ".join(f"{t} {n}" for t, n in sorted(res.counts.items()))
        shift = f"; stamps shifted by -{res.time_offset_ns} ns to fit ROS time" if res.time_offset_ns else ""
        print(f"{res.source} -> {res.path}: {counts}{shift}")
        for what, n in res.dropped.items():
            print(f"  dropped: {n} {what}")
        for w in res.warnings:
            print(f"  warning: {w}")
    return 0
