"""The pipeline latency bench as a run: the child processes (publisher, relay, ``cmr-fusion launch``), the
subscriber in this process, the figures and the report (``cmr-fusion bench pipeline``; what it measures and how:
:mod:`cmr_fusion_ros.eval.bench_pipeline`, which holds the content, stamps and statistics and imports no ROS)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.eval.bench_pipeline import (NODES_MODULE, RELAY_PREFIX, STREAMS, bench_parameters, latency_stats,
                                                stream_topic)

__all__ = ["run"]


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
    from cmr_fusion_ros.eval.report import Report, Table, finish_report, load_average, versions
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
        "node parameters": f"{params_path} with policy.min_score -1, min_probability 0, exclude_recent_s 0, debounce_s 0, top_k 1 (every "
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
                         f"{d.get('processed', '?')}, dropped {d.get('dropped', '?')}"
                       + ("; NO MatchEvent received for this stream's frames: the node's policy or its events topic "
                          "kept them from the subscriber" if not p["n"] and d.get("processed") else ""))
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
    report.notes.append("every processed frame produces an event in this bench (min_score -1, min_probability 0, "
                        "exclude_recent_s 0, "
                        "debounce_s 0): frames the node dropped under overload have no e2e sample")
    report.notes.append("e2e includes what the stages do not: the wait in the stream's bounded queue behind its own "
                        "earlier frames and for the search + insert step another stream may be in (each frame is "
                        "processed alone, by its stream's own worker)")
    finish_report(report, args.plot, args.json, lambda path: _plot(dist, path, command))
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
