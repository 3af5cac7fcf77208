"""`cmr-fusion eval`: recall of the encoders for all 9 query -> database modality pairs on two bags."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from cmr_fusion_ros.cli_options import add_no_progress
from cmr_fusion_ros.core.config import EncodersConfig
from cmr_fusion_ros.core.policy import PolicyConfig
from cmr_fusion_ros.core.poses import DEFAULT_MAX_EXTRAPOLATION_NS, DEFAULT_MAX_GAP_NS
from cmr_fusion_ros.core.types import MAX_LIDAR_VIEWS

HELP = ("embed a database bag and a query bag, print recall@1/5/10/1% for every query -> database modality pair, "
        "and recall@1 by each query's heading gap to its nearest-heading positive")


def add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    """Topic and radar-field options shared by the commands that read bags."""
    g = parser.add_argument_group("bag topics")
    g.add_argument("--camera-topic", action="append", default=None,
                   help="camera topic (Image or CompressedImage); repeat for candidates "
                        "(default: /camera/image/compressed, then /camera/image)")
    g.add_argument("--lidar-topic", default="/lidar/points", help="LiDAR PointCloud2 topic (default /lidar/points)")
    g.add_argument("--radar-topic", default="/radar/points", help="radar PointCloud2 topic (default /radar/points)")
    g.add_argument("--odom-topic", default="/odom", help="nav_msgs/Odometry topic with the poses (default /odom)")
    g.add_argument("--radar-fields", default="x,y,z,doppler,rcs",
                   help="radar field names for x,y,z,doppler,rcs, comma-separated (default x,y,z,doppler,rcs)")
    g.add_argument("--max-pose-gap", type=float, default=DEFAULT_MAX_GAP_NS / 1e9, metavar="S",
                   help="no pose is interpolated between odometry messages more than S seconds apart, as at run time "
                        f"(odometry.max_gap_s; default {DEFAULT_MAX_GAP_NS / 1e9:g}); samples without a pose are "
                        "skipped and counted")
    g.add_argument("--max-pose-extrapolation", type=float, default=DEFAULT_MAX_EXTRAPOLATION_NS / 1e9, metavar="S",
                   help="no pose for a sample more than S seconds before the first or after the last odometry "
                        f"message (odometry.max_extrapolation_s; default {DEFAULT_MAX_EXTRAPOLATION_NS / 1e9:g})")


def pose_rule(args: argparse.Namespace) -> str:
    """The gap rule as the commands print it beside the samples skipped for no pose."""
    return f"--max-pose-gap {args.max_pose_gap:g} s, --max-pose-extrapolation {args.max_pose_extrapolation:g} s"


def add_modalities_argument(parser: argparse.ArgumentParser) -> None:
    """``--modalities``: which of the bag's modalities a command uses (default: every one the bag has)."""
    parser.add_argument("--modalities", default=None, metavar="M1,M2",
                        help="modalities to use, comma-separated subset of camera,lidar,radar (default: every one "
                             "the bags have; a bag needs two or more, absent ones are skipped and reported)")


def topics_from_args(args: argparse.Namespace):
    from cmr_fusion_ros.bag.reader import BagTopics

    kw = {}
    if args.camera_topic:
        kw["camera"] = tuple(args.camera_topic)
    from cmr_fusion_ros.core.errors import ConfigError

    if not (math.isfinite(args.max_pose_gap) and args.max_pose_gap > 0):
        raise ConfigError("--max-pose-gap", args.max_pose_gap, "a number of seconds > 0")
    if not (math.isfinite(args.max_pose_extrapolation) and args.max_pose_extrapolation >= 0):
        raise ConfigError("--max-pose-extrapolation", args.max_pose_extrapolation, "a number of seconds >= 0")
    return BagTopics(lidar=args.lidar_topic, radar=args.radar_topic, odom=args.odom_topic,
                     radar_fields=tuple(s.strip() for s in args.radar_fields.split(",")),
                     max_gap_ns=int(round(args.max_pose_gap * 1e9)),
                     max_extrapolation_ns=int(round(args.max_pose_extrapolation * 1e9)), **kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", type=Path, required=True, help="bag whose samples form the database")
    parser.add_argument("--queries", type=Path, required=True, help="bag whose samples are the queries")
    parser.add_argument("--radius", type=float, default=10.0, help="positive if within this many metres (default 10)")
    parser.add_argument("--max-yaw-diff", type=float, default=None, metavar="DEG",
                        help="positives must also face within DEG degrees of the query's heading (default: any "
                             "heading; a place crossed at right angles then counts as the same place)")
    parser.add_argument("--lidar-views", type=int, default=EncodersConfig().lidar_views, metavar="N",
                        help="LiDAR -> LiDAR: each query scan also seen turned to N headings (360/N deg apart), "
                             "each database scan scored by its best view, as the runtime does (encoders.lidar_views; "
                             f"default {EncodersConfig().lidar_views}; 1 = the scans as they are)")
    parser.add_argument("--turned-view-penalty", type=float, default=PolicyConfig().turned_view_penalty, metavar="P",
                        help="subtracted from the scores the turned views find, as at run time "
                             f"(policy.turned_view_penalty; default {PolicyConfig().turned_view_penalty:g})")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with <modality>_encoder.onnx and cards (default: the installed models)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--png", type=Path, default=None, help="plot (default: beside --json, with .png)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    add_rig_arguments(parser)
    add_modalities_argument(parser)
    add_no_progress(parser)
    add_topic_arguments(parser)


RIG_STEPS = ("mount", "crop_fov", "density", "thin", "ground_fill", "camera_view")


def add_rig_arguments(parser: argparse.ArgumentParser) -> None:
    """Rig-aware input options (core.rig) shared by the commands that embed bags."""
    from cmr_fusion_ros.core.rig import CAMERA_BORDERS, INTENSITY_MODES, RigOptions

    d = RigOptions()
    g = parser.add_argument_group("rig-aware inputs (each bag's /tf_static and CameraInfo)")
    g.add_argument("--rig", choices=("canonical", "off"), default="canonical",
                   help="canonical: bring each sensor's data to the rig the models were trained on (mounts, "
                        "LiDAR density and intensity, camera view); off: the data as recorded (default canonical)")
    g.add_argument("--rig-skip", default="", metavar="STEPS",
                   help=f"comma-separated steps left out: {', '.join(RIG_STEPS)} (default: none)")
    g.add_argument("--rig-add", default="", metavar="STEPS",
                   help="comma-separated steps that are off by default put in: "
                        f"{', '.join(s for s in RIG_STEPS if not getattr(d, s))} (default: none)")
    g.add_argument("--rig-intensity", choices=INTENSITY_MODES, default=d.intensity,
                   help="LiDAR intensity: keep, auto (rescaled when its 90th percentile is off the canonical by more "
                        f"than a factor {d.intensity_tolerance:g}) or drop (default {d.intensity})")
    g.add_argument("--rig-camera-border", choices=CAMERA_BORDERS, default=d.camera_border,
                   help=f"fill of the canonical view outside a narrower camera's image (default {d.camera_border})")
    g.add_argument("--rig-camera-pad", choices=("yes", "no"), default="yes" if d.camera_pad else "no",
                   help="yes: a narrower camera is padded to the canonical field of view; no: it keeps its own "
                        f"(only wider cameras are cropped) (default {'yes' if d.camera_pad else 'no'})")


def rig_options_from_args(args: argparse.Namespace):
    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.core.rig import RigOptions

    if args.rig == "off":
        return None
    skip = [s.strip() for s in args.rig_skip.split(",") if s.strip()]
    add = [s.strip() for s in args.rig_add.split(",") if s.strip()]
    for flag, steps in (("--rig-skip", skip), ("--rig-add", add)):
        for step in steps:
            if step not in RIG_STEPS:
                raise ConfigError(flag, step, " | ".join(RIG_STEPS))
    return RigOptions(intensity=args.rig_intensity, camera_border=args.rig_camera_border,
                      camera_pad=args.rig_camera_pad == "yes",
                      **{step: True for step in add}, **{step: False for step in skip})


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cmr_fusion_ros.bag.inventory import bag_modalities, choose_modalities, pair_names, parse_modalities
    from cmr_fusion_ros.core.encoder import load_encoders
    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.eval.evaluate import (
        embed_bag, evaluate, format_heading_gaps, format_table, plot_report, write_json,
    )
    from cmr_fusion_ros.machine import machine_summary
    from cmr_fusion_ros.paths import models_dir

    if args.max_yaw_diff is not None and not 0 < args.max_yaw_diff <= 180:  # before minutes of embedding
        raise ConfigError("--max-yaw-diff", args.max_yaw_diff, "a number of degrees in (0, 180]")
    if not (math.isfinite(args.turned_view_penalty) and 0 <= args.turned_view_penalty <= 2):
        raise ConfigError("--turned-view-penalty", args.turned_view_penalty, "a number in [0, 2]")
    if not 1 <= args.lidar_views <= MAX_LIDAR_VIEWS:
        raise ConfigError("--lidar-views", args.lidar_views, f"an integer in 1..{MAX_LIDAR_VIEWS}")
    topics = topics_from_args(args)
    rig = rig_options_from_args(args)
    requested = parse_modalities(args.modalities)
    minimum = min(2, len(requested)) if requested else 2
    mods = {role: choose_modalities(bag_modalities(bag, topics), requested, str(bag), minimum=minimum)
            for role, bag in (("database", args.database), ("queries", args.queries))}
    folder = args.models or models_dir()
    encoders = load_encoders(folder, intra_op_threads=args.threads)
    embedded = {}
    dropped: dict[str, dict[str, int]] = {}
    rejected: dict[str, dict[str, int]] = {}
    for role, bag in (("database", args.database), ("queries", args.queries)):
        views = args.lidar_views if role == "queries" else 1
        dropped[role], rejected[role] = {}, {}
        with tqdm(desc=f"embedding {role} {bag.name}", unit=" msg", file=sys.stderr, disable=args.no_progress) as bar:
            embedded[role] = embed_bag(bag, {m: encoders[m] for m in mods[role]}, topics, progress=bar.update,
                                       lidar_views=views, dropped=dropped[role], rig=rig, rejected=rejected[role])
    present, absent = pair_names(mods["queries"], mods["database"])
    report = evaluate(embedded["database"], embedded["queries"], args.radius, max_yaw_deg=args.max_yaw_diff,
                      view_penalty=args.turned_view_penalty)
    command = "cmr-fusion " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["eval"] else None
    print(f"command: {command or 'cmr-fusion eval'}")
    print(f"machine: {machine_summary()}")
    print(f"models: {folder}")
    yaw = f", heading within {args.max_yaw_diff:g} deg" if args.max_yaw_diff is not None else ""
    views = (f", LiDAR->LiDAR with {args.lidar_views} query views (turned ones -{args.turned_view_penalty:g})"
             if args.lidar_views > 1 else "")
    print(f"database: {args.database} | queries: {args.queries} | radius {args.radius:g} m{yaw}{views}")
    print(f"rig: {_rig_line(rig)}")
    print(f"modalities: database {', '.join(m.value for m in mods['database'])}; queries "
          f"{', '.join(m.value for m in mods['queries'])}; pairs evaluated: {len(present)} of 9"
          + (f" (absent: {', '.join(absent)})" if absent else ""))
    for role, d in dropped.items():
        if d:
            print(f"{role}: skipped (no odometry pose: {pose_rule(args)}): "
                  + ", ".join(f"{m} {n}" for m, n in d.items()))
    for role, d in rejected.items():
        if d:
            print(f"{role}: messages the decoder rejected, skipped: " + ", ".join(f"{k} {n}" for k, n in d.items()))
    print(format_table(report))
    if gaps := format_heading_gaps(report):
        print(gaps)
    if args.json:
        data = report.to_dict()
        data["command"] = command
        data["machine"] = machine_summary()
        data["models"] = str(folder)
        data["rig"] = _rig_line(rig)
        data["model_sha256"] = {m.value: e.card.sha256 for m, e in encoders.items()}
        data["modalities"] = {role: [m.value for m in ms] for role, ms in mods.items()}
        data["absent_pairs"] = absent
        data["skipped_without_pose"] = dropped
        data["rejected_by_decoder"] = rejected
        write_json(args.json, data)
        print(f"wrote {args.json}")
    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png:
        plot_report(report, png)
        print(f"wrote {png}")
    return 0


def _rig_line(rig) -> str:
    if rig is None:
        return "off (data as recorded)"
    on = [s for s in RIG_STEPS if getattr(rig, s)]
    return f"canonical ({', '.join(on) or 'no geometric step'}; intensity {rig.intensity})"
