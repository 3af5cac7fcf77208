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
  parameters make every processed frame produce an event (``policy.min_score: -1``, ``exclude_recent_s: 0``,
  ``debounce_s: 0``, ``top_k: 1``; memory in RAM, no odometry); everything else as in the parameters file.
* **subscriber**: this process (:class:`cmr_fusion_ros.ros.bench_nodes.BenchSubscriber`). Floor: receive wall time minus the stamp in the relayed bytes. Pipeline: receive wall
  time of a ``MatchEventArray`` minus the query stamp of each event in it (the first event per query frame), per
  query modality; plus the node's last ``/diagnostics`` (received, processed, dropped, stage p50/p99).

Both phases see the same generated messages and the same two hops (publisher -> relay | node -> subscriber), so
``pipeline p99 - floor p99`` is what the node adds. CPU use of the relay and of the node process (user + system
time over the publishing window, from /proc via psutil; 100 % = one core). The first ``warmup_s`` seconds of each
phase are left out.

This module holds the orchestration, the generated content, the CDR stamps, the statistics and the report, and
imports no ROS; the publisher, the relay and the subscriber are in :mod:`cmr_fusion_ros.ros.bench_nodes`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "run",
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
    pol.update({"min_score": -1.0, "exclude_recent_s": 0.0, "debounce_s": 0.0, "top_k": 1, "sequence_length": 1})
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


# --- the bench (orchestration; the subscriber is ros.bench_nodes.BenchSubscriber) ----------------------------------

@dataclass
class _Child:
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    started_ns: int | None = None
    event: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)

    def pump(self, echo: bool = False) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            self.lines.append(line)
            if echo:
                print(f"    {line}", flush=True)
            if line.startswith("START "):
                self.started_ns = int(line.split()[1])
                self.event.set()
            if line == "READY":
                self.ready.set()


def _start(cmd: list[str], env: Mapping[str, str], echo: bool = False) -> _Child:
    proc = subprocess.Popen(cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    child = _Child(proc)
    threading.Thread(target=child.pump, args=(echo,), daemon=True).start()
    return child


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _cpu_of(pids: Sequence[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


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


def _command(args: argparse.Namespace) -> str:
    parts: list[str] = []
    for key in ("models", "params"):
        if getattr(args, key):
            parts += [f"--{key}", str(getattr(args, key))]
    parts += ["--duration", str(args.duration), "--warmup", str(args.warmup), "--camera-transport",
              args.camera_transport, "--rates", args.rates, "--width", str(args.width), "--height", str(args.height),
              "--lidar-columns", str(args.lidar_columns), "--radar-points", str(args.radar_points)]
    parts += ["--skip-floor"] if args.skip_floor else []
    for key in ("json", "plot"):
        if getattr(args, key):
            parts += [f"--{key}", str(getattr(args, key))]
    return "cmr-fusion bench pipeline " + shlex.join(parts)


def _wait(cond, timeout: float, what: str) -> None:
    from cmr_fusion_ros.core.errors import CmrFusionError

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise CmrFusionError(f"bench pipeline: timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _publisher_cmd(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", NODES_MODULE, "publish", "--duration", str(args.duration),
            "--camera-transport", args.camera_transport, "--rates", args.rates, "--width", str(args.width),
            "--height", str(args.height), "--lidar-columns", str(args.lidar_columns), "--radar-points",
            str(args.radar_points)]


def _run_publisher(args, env, echo: bool, cpu_pids) -> tuple[dict[str, Any], int, float, float]:
    """Run the publisher to its end; returns its counts, its start wall ns, and the CPU seconds of ``cpu_pids()``
    and the wall seconds over its publishing window."""
    from cmr_fusion_ros.core.errors import CmrFusionError

    pub = _start(_publisher_cmd(args), env, echo)
    if not pub.event.wait(timeout=150.0):
        _stop(pub.proc, 5)
        raise CmrFusionError("the bench publisher did not start: " + " | ".join(pub.lines[-8:]))
    pids = cpu_pids()
    c0, w0 = _cpu_of(pids), time.monotonic()
    try:
        pub.proc.wait(timeout=args.duration + 120)
    except subprocess.TimeoutExpired:
        _stop(pub.proc, 5)
    c1, w1 = _cpu_of(pids), time.monotonic()
    time.sleep(0.2)
    info = next((json.loads(line) for line in reversed(pub.lines) if line.startswith("{")), None)
    if pub.proc.returncode != 0 or info is None or "published" not in info:
        raise CmrFusionError(f"the bench publisher failed ({pub.proc.returncode}): " + " | ".join(pub.lines[-8:]))
    return info, pub.started_ns or 0, c1 - c0, w1 - w0


def run(args: argparse.Namespace) -> int:  # noqa: C901 - one orchestration, in order
    from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file, render_parameter_file
    from cmr_fusion_ros.core.errors import CmrFusionError, ConfigError
    from cmr_fusion_ros.eval.report import Report, Table, load_average, versions, write_report
    from cmr_fusion_ros.launcher import child_environment
    from cmr_fusion_ros.paths import config_file

    if not (args.duration > args.warmup >= 0):
        raise ConfigError("--duration/--warmup", (args.duration, args.warmup), "duration > warmup >= 0")
    rates = {k: float(v) for k, v in (kv.split("=") for kv in args.rates.split(",") if kv)}
    if not rates or any(k not in STREAMS or v <= 0 for k, v in rates.items()):
        raise ConfigError("--rates", args.rates, "stream=Hz pairs of camera, lidar, radar with Hz > 0")
    streams = list(rates)
    command = _command(args)
    report = Report("Latency: live graph vs bare DDS floor", command,
                    versions=versions("onnxruntime", "faiss", "rclpy", "opencv"))
    print(f"command: {command}", flush=True)
    print(f"machine: {report.machine['summary']}; load average {report.machine['loadavg']}", flush=True)

    env = child_environment()
    env["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None else 150 + os.getpid() % 80)
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION", "ROS_DOMAIN_ID"):
        os.environ[key] = env[key]
    params_path = args.params or config_file("fusion.yaml")
    base = load_parameter_file(params_path, "fusion_node")
    node_params = bench_parameters(base, models_dir=str(args.models) if args.models else None,
                                   camera_transport=args.camera_transport)
    node_params.setdefault("streams", {})
    for s in STREAMS:
        node_params["streams"].setdefault(s, {})["enabled"] = s in rates
    FusionConfig.from_dict(node_params, source="bench parameters")  # fail here, not in the child, on a bad value
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="cmr_bench_pipeline_")
    bench_params = Path(tmp.name) / "bench_params.yaml"
    bench_params.write_text(render_parameter_file({"fusion_node": node_params},
                                                  f"generated by cmr-fusion bench pipeline from {params_path}"))
    report.settings = {
        "streams": ", ".join(f"{k} {v:g} Hz" for k, v in rates.items()),
        "camera": f"{args.width}x{args.height} {'JPEG CompressedImage' if args.camera_transport == 'compressed' else 'rgb8 Image'}",
        "lidar": f"64 x {args.lidar_columns} = {64 * args.lidar_columns} points (x, y, z, intensity, ring)",
        "radar": f"{args.radar_points} points (x, y, z, doppler, rcs)",
        "stamps": "wall clock at publish, written into the CDR bytes",
        "duration per phase": f"{args.duration:g} s, first {args.warmup:g} s left out",
        "node parameters": f"{params_path} with policy.min_score -1, exclude_recent_s 0, debounce_s 0, top_k 1 (every "
                           "processed frame yields an event), memory in RAM, no odometry",
        "ROS": f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, {env['RMW_IMPLEMENTATION']}, discovery "
               f"{env['ROS_AUTOMATIC_DISCOVERY_RANGE']}, profile {env['FASTDDS_DEFAULT_PROFILES_FILE']}",
    }
    for k, v in report.settings.items():
        print(f"{k}: {v}", flush=True)

    from cmr_fusion_ros.ros.bench_nodes import BenchSubscriber

    col = BenchSubscriber(streams, args.camera_transport)  # its own rclpy context, spun in a background thread
    phases: dict[str, Any] = {}
    launcher = relay = None
    try:
        if not args.skip_floor:
            la = load_average()
            print(f"[floor] relay + publisher for {args.duration:g} s (load average {la[0]:.2f})", flush=True)
            relay = _start([sys.executable, "-m", NODES_MODULE, "relay", "--camera-transport",
                            args.camera_transport, "--streams", ",".join(streams)], env, args.verbose)
            if not relay.ready.wait(60.0):
                raise CmrFusionError("the relay did not start: " + " | ".join(relay.lines[-8:]))
            relay_topics = [RELAY_PREFIX + stream_topic(s, args.camera_transport) for s in streams]
            _wait(lambda: all(col.count_publishers(t) >= 1 for t in relay_topics), 60, "the relay's publishers")
            info, start_ns, cpu_s, wall_s = _run_publisher(args, env, args.verbose, lambda: [relay.proc.pid])
            time.sleep(1.0)
            _stop(relay.proc)
            phases["floor"] = {"publisher": info, "start_ns": start_ns, "cpu_percent": 100 * cpu_s / wall_s,
                               "loadavg": list(la), "loadavg_end": list(load_average())}
        la = load_average()
        print(f"[pipeline] cmr-fusion launch + publisher for {args.duration:g} s (load average {la[0]:.2f})", flush=True)
        launcher = _start([sys.executable, "-m", "cmr_fusion_ros.cli", "launch", "--params", str(bench_params)], env,
                          args.verbose)
        _wait(lambda: col.count_publishers("/fusion_node/matches") >= 1 or launcher.proc.poll() is not None, 180,
              "fusion_node's ~/matches publisher")
        if launcher.proc.poll() is not None:
            raise CmrFusionError(f"the launcher exited {launcher.proc.returncode}: " + " | ".join(launcher.lines[-10:]))
        info, start_ns, cpu_s, wall_s = _run_publisher(args, env, args.verbose, lambda: _descendants(launcher.proc.pid))
        time.sleep(2.5)  # the last frames and a diagnostics tick
        with col.lock:
            diag = {k: dict(v) for k, v in col.diagnostics.items()}
        rc = _stop(launcher.proc, 60)
        phases["pipeline"] = {"publisher": info, "start_ns": start_ns, "cpu_percent": 100 * cpu_s / wall_s,
                              "loadavg": list(la), "loadavg_end": list(load_average()), "diagnostics": diag,
                              "launcher_exit": rc}
    finally:
        for child in (relay, launcher):
            if child is not None:
                _stop(child.proc, 30)
        col.close()
        tmp.cleanup()

    # --- figures ---
    warm = round(args.warmup * 1e9)
    figures: dict[str, Any] = {"phases": phases, "streams": {}}
    rows = []
    stage_rows = []
    summary = []
    dist: dict[str, dict[str, np.ndarray]] = {}
    for s in streams:
        fs: dict[str, Any] = {}
        pub_p = phases["pipeline"]["publisher"]["published"].get(s, 0)
        t0p = phases["pipeline"]["start_ns"] + warm
        e2e = [(t - st) / 1e6 for st, t in col.e2e.get(s, {}).items() if st >= t0p]
        fs["pipeline_e2e_ms"] = latency_stats(e2e)
        fs["published_pipeline"] = pub_p
        d = phases["pipeline"]["diagnostics"].get(f"stream {s}", {})
        fs["node"] = d
        fs["frames_with_event"] = len(col.e2e.get(s, {}))
        dist[s] = {"pipeline": np.asarray(e2e)}
        floor = None
        if "floor" in phases:
            t0f = phases["floor"]["start_ns"] + warm
            fl = [(t - st) / 1e6 for st, t in col.floor[s] if st >= t0f]
            floor = latency_stats(fl)
            fs["floor_ms"] = floor
            fs["published_floor"] = phases["floor"]["publisher"]["published"].get(s, 0)
            fs["received_floor"] = len(col.floor[s])
            dist[s]["floor"] = np.asarray(fl)
        figures["streams"][s] = fs
        p = fs["pipeline_e2e_ms"]
        rows.append([s, rates[s], p["n"], p["p50"], p["p99"], p["max"],
                     floor["p50"] if floor else float("nan"), floor["p99"] if floor else float("nan"),
                     floor["max"] if floor else float("nan"),
                     p["p99"] - floor["p99"] if floor else float("nan"),
                     p["p99"] / floor["p99"] if floor and floor["p99"] > 0 else float("nan"),
                     f"{fs.get('received_floor', 0)}/{fs.get('published_floor', 0)}",
                     f"{d.get('received', '?')}/{pub_p}", d.get("processed", "?"), d.get("dropped", "?"),
                     d.get("bad_messages", "?")])
        stage_rows.append([s] + [f"{_f(d.get(f'{st}_p50_ms'))} / {_f(d.get(f'{st}_p99_ms'))}"
                                 for st in ("decode", "preprocess", "encode", "search", "publish")]
                          + [f"{_f(d.get('latency_p50_ms'))} / {_f(d.get('latency_p99_ms'))}"])
        summary.append(f"{s}: e2e p50 {p['p50']:.1f} p99 {p['p99']:.1f} max {p['max']:.1f} ms (n={p['n']})"
                       + (f"; DDS floor p50 {floor['p50']:.2f} p99 {floor['p99']:.2f} max {floor['max']:.2f} ms "
                          f"(n={floor['n']}); p99 difference {p['p99'] - floor['p99']:.1f} ms, ratio "
                          f"{p['p99'] / floor['p99']:.1f}x" if floor and floor["n"] else "")
                       + f"; node received {d.get('received', '?')}/{pub_p} published, processed "
                         f"{d.get('processed', '?')}, dropped {d.get('dropped', '?')}")
    cpu_line = f"CPU: fusion_node {phases['pipeline']['cpu_percent']:.0f} %"
    if "floor" in phases:
        cpu_line += f", relay {phases['floor']['cpu_percent']:.0f} %"
    cpu_line += " of one core over the publishing window"
    summary.append(cpu_line)
    summary.append("load average: " + ", ".join(f"{k} phase {v['loadavg'][0]:.2f} -> {v['loadavg_end'][0]:.2f}"
                                                for k, v in phases.items()))
    for line in summary:
        print(line, flush=True)
    report.summary = summary
    report.figures = figures
    report.tables.append(Table("end-to-end latency (ms): sensor stamp -> receive by a subscriber process",
                               ["stream", "Hz", "n", "e2e p50", "e2e p99", "e2e max", "floor p50", "floor p99",
                                "floor max", "p99 diff", "p99 ratio", "floor recv/pub", "node recv/pub",
                                "processed", "dropped", "bad"], rows,
                               "e2e = MatchEvent received (first event of each query frame); floor = the same "
                               "messages through a plain rclpy relay; node counters from its last /diagnostics"))
    report.tables.append(Table("node stages p50 / p99 (ms, from /diagnostics, last 2000 frames incl. warm-up)",
                               ["stream", "decode", "preprocess", "encode", "search", "publish",
                                "receive -> published"], stage_rows))
    report.notes.append("every processed frame produces an event in this bench (min_score -1, exclude_recent_s 0, "
                        "debounce_s 0): frames the node dropped under overload have no e2e sample")
    report.notes.append("e2e includes what the stages do not: the wait in the node's bounded queue behind other "
                        "frames and the time alignment (a frame set is processed when complete or when every missing "
                        "stream has delivered a later frame, so a camera frame waits for the next LiDAR scan, up to one "
                        "LiDAR period at 10 Hz; sync.tolerance_s / timeout_s in the parameters)")
    if args.plot:
        _plot(dist, args.plot, command)
        report.images.append(str(args.plot))
        print(f"wrote {args.plot}")
    if args.json:
        js, md = write_report(report, args.json)
        print(f"wrote {js}, {md}")
    return 0


def _f(v: Any) -> str:
    try:
        return f"{float(v):.1f}"
    except (TypeError, ValueError):
        return "?"


def _plot(dist: Mapping[str, Mapping[str, np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(dist), figsize=(4.5 * len(dist), 3.8), squeeze=False)
    for ax, (s, d) in zip(axes[0], dist.items()):
        for label, colour in (("floor", "#7f7f7f"), ("pipeline", "#1f77b4")):
            a = np.sort(d.get(label, np.zeros(0)))
            if a.size:
                ax.plot(a, np.arange(1, a.size + 1) / a.size, color=colour,
                        label=f"{'DDS floor (relay)' if label == 'floor' else 'fusion_node e2e'}: p99 "
                              f"{np.percentile(a, 99):.1f} ms")
        ax.set_xscale("log")
        ax.set(xlabel="latency (ms)", ylabel="fraction of frames", title=s)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    import textwrap

    fig.suptitle(textwrap.fill(title, 160), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cmr_fusion_ros.eval.bench_pipeline publish|relay ...``, kept for older command lines: the same as
    ``python -m cmr_fusion_ros.ros.bench_nodes ...``, where the child processes live."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("publish", "relay"):
        from cmr_fusion_ros.ros.bench_nodes import main as nodes_main

        return nodes_main(argv)
    print("usage: python -m cmr_fusion_ros.eval.bench_pipeline publish|relay ...  (the bench: cmr-fusion bench "
          "pipeline)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
