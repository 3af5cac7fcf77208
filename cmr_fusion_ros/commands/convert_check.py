"""`cmr-fusion convert-check`: real sensor samples -> ROS 2 messages -> CDR -> numpy, checked for loss and timed."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cmr_fusion_ros.machine import machine_summary
from cmr_fusion_ros.paths import source_root

HELP = "convert the real sensor samples to ROS 2 messages and back, report losses and conversion times"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="folder with the real samples (default: tests/data/real of the source checkout)")
    parser.add_argument("--repeat", type=int, default=20, help="timing repetitions per conversion (default 20)")


def _median_ms(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.names:
        return a.shape == b.shape and all(np.array_equal(a[n], b[n], equal_nan=True) for n in a.dtype.names)
    return a.shape == b.shape and np.array_equal(a, b)


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.rosenv import apply_ros_defaults

    apply_ros_defaults()
    import cv2
    from rclpy.serialization import deserialize_message, serialize_message

    from cmr_fusion_ros.core.errors import BagError
    from cmr_fusion_ros.core.pointcloud import structured
    from cmr_fusion_ros.core.sensor_files import read_dgp_npz, read_pcd, read_radar_csv
    from cmr_fusion_ros.ros import conversions as conv

    data = args.data or source_root() / "tests" / "data" / "real"
    if not data.is_dir():
        raise BagError(str(data), "no such folder; pass --data with the real samples (tests/data/real)")

    def cdr(msg):
        return deserialize_message(serialize_message(msg), type(msg))

    rows: list[tuple[str, str, bool, float, float]] = []

    def check_cloud(label: str, cloud: np.ndarray) -> None:
        enc_ms, msg = _median_ms(lambda: conv.array_to_pointcloud2(cloud, conv.make_header(0, "sensor")), args.repeat)
        wire = cdr(msg)
        dec_ms, back = _median_ms(lambda: conv.pointcloud2_to_array(wire), args.repeat)
        rows.append((label, f"PointCloud2 {cloud.shape[0]} pts, fields {','.join(cloud.dtype.names)}",
                     _same(cloud, back), enc_ms, dec_ms))

    def check_image(label: str, img: np.ndarray, encoding: str) -> None:
        enc_ms, msg = _median_ms(lambda: conv.numpy_to_image(img, encoding), args.repeat)
        wire = cdr(msg)
        dec_ms, back = _median_ms(lambda: conv.image_to_numpy(wire), args.repeat)
        rows.append((label, f"Image {encoding} {img.shape[1]}x{img.shape[0]}", _same(img, back), enc_ms, dec_ms))

    dgp = data / "tri-dgp" / "scene_01"
    for f in sorted(dgp.glob("*.npz")):
        check_cloud(f"DGP LiDAR {f.name}", read_dgp_npz(f))
    for f in sorted(dgp.glob("*.jpg")):
        check_image(f"DGP camera {f.name}", cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), "rgb8")
        msg = conv.numpy_to_compressed(np.zeros((1, 1, 3), np.uint8), "rgb8")
        msg.format, msg.data = "jpeg", __import__("array").array("B", f.read_bytes())
        wire = cdr(msg)
        dec_ms, back = _median_ms(lambda: conv.compressed_to_numpy(wire, "rgb8"), max(3, args.repeat // 4))
        ref = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        rows.append((f"DGP camera {f.name}", "CompressedImage jpeg -> rgb8", _same(ref, back), float("nan"), dec_ms))
    pj = data / "pjlab-sensorscalib"
    for f in sorted(pj.glob("*.pcd")):
        check_cloud(f"PJLab LiDAR {f.name}", read_pcd(f))
    for f in sorted(pj.glob("*.csv")):
        check_cloud(f"PJLab radar {f.name}", read_radar_csv(f))
    for f in sorted(pj.glob("*.jpg")):
        check_image(f"PJLab camera {f.name}", cv2.imread(str(f)), "bgr8")

    rng = np.random.default_rng(0)
    n = 120_000
    synthetic = structured({k: rng.normal(size=n).astype(np.float32) for k in ("x", "y", "z", "intensity")}
                           | {"ring": rng.integers(0, 128, n).astype(np.uint16)})
    check_cloud("synthetic 120k-point cloud", synthetic)
    check_image("synthetic 1280x720 image", rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), "rgb8")

    print(f"command: cmr-fusion convert-check --data {data} --repeat {args.repeat}")
    print(f"machine: {machine_summary()}; times are medians of {args.repeat} runs")
    print("(this is the foundation demo: the full pipeline demo replaces it once the pipeline exists)\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'sample':<{width}}  {'message':<58} {'lossless':>8} {'to msg ms':>10} {'to numpy ms':>12}")
    for label, what, ok, enc, dec in rows:
        enc_s = "-" if enc != enc else f"{enc:.2f}"
        print(f"{label:<{width}}  {what[:58]:<58} {'yes' if ok else 'NO':>8} {enc_s:>10} {dec:>12.2f}")
    lossy = [r[0] for r in rows if not r[2]]
    if lossy:
        print(f"\nLOSS in: {', '.join(lossy)}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} conversions lossless")
    return 0
