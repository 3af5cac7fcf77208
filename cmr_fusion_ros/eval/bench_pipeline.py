"""Latency benchmark of the live graph against the bare DDS floor, in one run.

Processes (all on this machine: localhost discovery, the project's Fast DDS profile, a domain id of the run's own):

* **publisher** (``python -m cmr_fusion_ros.ros.bench_nodes publish``): generated sensor messages at nominal
  rates (default camera 30 Hz 1280x720 JPEG, LiDAR 10 Hz 64 x 1600 = 102,400 points, radar 20 Hz 256 points), one
  thread per stream on a fixed schedule. Each message is serialised once; before each publish its
  ``header.stamp`` is overwritten in the CDR bytes with the wall clock (``time.time_ns()``), so the stamp is the
  moment of publishing.
* **floor** phase: a plain rclpy **relay** process (``... relay``) subscribes to the sensor topics (raw CDR) and
  republishes the same bytes on ``/bench_relay/<topic>``.
* **pipeline** phase: ``cmr-fusion launch`` with the real ``fusion_node`` and the given models. The bench's
  parameters make every processed frame produce an event (``policy.min_score: -1``, ``min_probability: 0``,
  ``exclude_recent_s: 0``,
  ``debounce_s: 0``, ``top_k: 1``; memory in RAM, no odometry); everything else as in the parameters file.
* **subscriber**: this process (:class:`cmr_fusion_ros.ros.bench_nodes.BenchSubscriber`). Floor: receive wall time minus the stamp in the relayed bytes. Pipeline: receive wall
  time of a ``MatchEventArray`` minus the query stamp of each event in it (the first event per query frame), per
  query modality; plus the node's last ``/diagnostics`` (received, processed, dropped, stage p50/p99).

Both phases see the same generated messages and the same two hops (publisher -> relay | node -> subscriber), so
``pipeline p99 - floor p99`` is what the node adds. CPU use of the relay and of the node process (user + system
time over the publishing window, from /proc via psutil; 100 % = one core). The first ``warmup_s`` seconds of each
phase are left out.

This module holds the generated content, the CDR stamps, the statistics, the parameters and the command-line
arguments, and imports no ROS; the run itself (children, subscriber, report) is
:func:`cmr_fusion_ros.ros.bench_pipeline.run` and the publisher, the relay and the subscriber are in
:mod:`cmr_fusion_ros.ros.bench_nodes`.
"""

from __future__ import annotations

import argparse
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.cli_options import add_params_file

__all__ = [
    "STREAMS",
    "StreamSpec",
    "add_arguments",
    "bench_parameters",
    "generate_content",
    "latency_stats",
    "read_stamp",
    "stream_topic",
    "write_stamp",
]

RELAY_PREFIX = "/bench_relay"
NODES_MODULE = "cmr_fusion_ros.ros.bench_nodes"  # the publisher and relay processes: python -m NODES_MODULE publish|relay


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str  # camera | lidar | radar
    topic: str  # absolute
    rate_hz: float


STREAMS = {"camera": 30.0, "lidar": 10.0, "radar": 20.0}


# --- CDR stamps -----------------------------------------------------------------------------------------------------
# A serialised message starts with the 4-byte encapsulation header, then (for every sensor message) std_msgs/Header:
# stamp.sec int32, stamp.nanosec uint32, in the byte order the encapsulation names (0x0001 little, 0x0000 big).

def _order(buf: bytes | bytearray | memoryview) -> str:
    return "<" if buf[1] & 1 else ">"


def read_stamp(buf: bytes | bytearray | memoryview) -> int:
    """The header stamp (ns) of a serialised sensor message."""
    sec, nsec = struct.unpack_from(_order(buf) + "iI", buf, 4)
    return sec * 1_000_000_000 + nsec


def write_stamp(buf: bytearray, stamp_ns: int) -> None:
    """Overwrite the header stamp of a serialised sensor message in place."""
    struct.pack_into(_order(buf) + "iI", buf, 4, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)


# --- generated content ----------------------------------------------------------------------------------------------

def _camera_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A street-like picture: sky and ground gradients, box 'buildings' with window grids, noise."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    horizon = int(height * rng.uniform(0.4, 0.6))
    y = np.linspace(0, 1, horizon)[:, None]
    img[:horizon] = (np.array([120, 160, 230]) * (1 - 0.4 * y) + 30)[:, None, :].astype(np.uint8)
    g = np.linspace(0, 1, height - horizon)[:, None]
    img[horizon:] = (np.array([90, 90, 95]) * (0.6 + 0.4 * g))[:, None, :].astype(np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        w = int(rng.integers(width // 16, width // 4))
        h = int(rng.integers(height // 6, horizon))
        x0 = int(rng.integers(0, width - w))
        colour = rng.integers(40, 220, 3)
        img[horizon - h:horizon, x0:x0 + w] = colour
        img[horizon - h:horizon:12, x0:x0 + w:10] = colour // 3
    noise = rng.integers(0, 12, img.shape, dtype=np.uint8)
    return np.clip(img.astype(np.int16) + noise - 6, 0, 255).astype(np.uint8)


def _lidar_cloud(rng: np.random.Generator, rings: int, columns: int) -> np.ndarray:
    """A spinning LiDAR in a street canyon: ranges from walls at varying distances, ground for the low beams."""
    az = np.linspace(-np.pi, np.pi, columns, endpoint=False)
    el = np.deg2rad(np.linspace(-25.0, 15.0, rings))
    walls = 8.0 + 20.0 * np.abs(np.sin(az * rng.integers(2, 6) + rng.uniform(0, np.pi)))
    a, e = np.meshgrid(az, el)
    rng_m = np.where(e < -0.02, np.minimum(1.8 / np.maximum(-np.sin(e), 1e-3), walls[None, :]), walls[None, :])
    rng_m = rng_m + rng.normal(0, 0.02, rng_m.shape)
    pts = np.zeros(rings * columns, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"),
                                           ("ring", "<u2")])
    pts["x"] = (rng_m * np.cos(e) * np.cos(a)).ravel()
    pts["y"] = (rng_m * np.cos(e) * np.sin(a)).ravel()
    pts["z"] = (rng_m * np.sin(e) + 1.8).ravel()
    pts["intensity"] = rng.uniform(0, 1, rings * columns)
    pts["ring"] = np.repeat(np.arange(rings, dtype=np.uint16), columns)
    return pts


def _radar_cloud(rng: np.random.Generator, n: int) -> np.ndarray:
    pts = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("doppler", "<f4"), ("rcs", "<f4")])
    r = rng.uniform(2, 80, n)
    a = rng.uniform(-0.7, 0.7, n)
    pts["x"], pts["y"], pts["z"] = r * np.cos(a), r * np.sin(a), rng.normal(0.5, 0.5, n)
    pts["doppler"] = -8.0 * np.cos(a) + rng.normal(0, 0.3, n)
    pts["rcs"] = rng.normal(5, 8, n)
    return pts


def generate_content(stream: str, *, variants: int = 4, seed: int = 0, width: int = 1280, height: int = 720,
                     lidar_rings: int = 64, lidar_columns: int = 1600, radar_points: int = 256) -> list[np.ndarray]:
    """``variants`` generated payloads of ``stream`` from one seeded generator: ``height x width x 3`` uint8 RGB
    pictures (camera) or structured point arrays (lidar: x, y, z, intensity, ring; radar: x, y, z, doppler, rcs).
    The bench's messages are made of them by :func:`cmr_fusion_ros.ros.bench_nodes.generate_messages`."""
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}")
    rng = np.random.default_rng(seed)
    make = {"camera": lambda: _camera_image(rng, width, height),
            "lidar": lambda: _lidar_cloud(rng, lidar_rings, lidar_columns),
            "radar": lambda: _radar_cloud(rng, radar_points)}[stream]
    return [make() for _ in range(variants)]


# --- statistics -------------------------------------------------------------------------------------------------------

def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "mean": float(a.mean())}


def bench_parameters(base: Mapping[str, Any], *, models_dir: str | None, camera_transport: str) -> dict[str, Any]:
    """The node parameters of the bench: ``base`` (a parameters file's fusion_node section) with every processed
    frame made to produce an event, the memory in RAM and no odometry."""
    import copy

    p = copy.deepcopy(dict(base))
    pol = p.setdefault("policy", {})
    pol.update({"min_score": -1.0, "min_probability": 0.0, "exclude_recent_s": 0.0, "debounce_s": 0.0, "top_k": 1,
                "sequence_length": 1})
    p.setdefault("memory", {}).setdefault("persistence", {})["directory"] = ""
    p.setdefault("odometry", {})["topic"] = ""
    cam = p.setdefault("streams", {}).setdefault("camera", {})
    cam["transport"] = camera_transport
    cam["topic"] = "camera/image/compressed" if camera_transport == "compressed" else "camera/image"
    p.setdefault("streams", {}).setdefault("lidar", {})["topic"] = "lidar/points"
    p.setdefault("streams", {}).setdefault("radar", {})["topic"] = "radar/points"
    if models_dir:
        p.setdefault("encoders", {})["models_dir"] = str(models_dir)
    return p


def stream_topic(stream: str, camera_transport: str) -> str:
    """The absolute sensor topic of ``stream`` (as the bench parameters name it)."""
    return {"camera": "/camera/image/compressed" if camera_transport == "compressed" else "/camera/image",
            "lidar": "/lidar/points", "radar": "/radar/points"}[stream]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, default=None, help="models folder (default: the installed models)")
    add_params_file(p, "parameters YAML to start from (default: fusion.yaml)")
    p.add_argument("--duration", type=float, default=25.0, help="seconds of publishing per phase (default 25)")
    p.add_argument("--warmup", type=float, default=3.0, help="first seconds of each phase left out (default 3)")
    p.add_argument("--camera-transport", choices=("compressed", "raw"), default="compressed",
                   help="camera as JPEG CompressedImage (default) or raw rgb8 Image")
    p.add_argument("--rates", default="camera=30,lidar=10,radar=20", help="stream=Hz,... (default %(default)s)")
    p.add_argument("--width", type=int, default=1280, help="camera image width in pixels (default 1280)")
    p.add_argument("--height", type=int, default=720, help="camera image height in pixels (default 720)")
    p.add_argument("--lidar-columns", type=int, default=1600, help="points per ring (64 rings; default 1600)")
    p.add_argument("--radar-points", type=int, default=256, help="points per radar scan (default 256)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the process id)")
    p.add_argument("--skip-floor", action="store_true", help="only the pipeline phase (no ratio)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE.json", help="report (FILE.json + FILE.md)")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="latency distributions per stream")
    p.add_argument("--verbose", action="store_true", help="echo the children's output")
