"""The stress runs that run ROS nodes (``cmr-fusion stress overload|soak``): the node in this process with slowed
encoders fed by a replay, and the launched graph replayed in a loop. Reports, figures and the crash run are in
:mod:`cmr_fusion_ros.eval.stress` (no ROS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cmr_fusion_ros.eval.stress import OverloadReport, SlowEncoder, SoakReport, machine_line, summarise_soak
from cmr_fusion_ros.ros.stress_nodes import DiagnosticsListener, SpinningFusionNode

__all__ = ["overload_run", "soak_run"]


def overload_run(bag: str | Path, config, *, rate: float = 2.0, delay_s: float = 0.05, duration_s: float = 0.0,
                 env: dict | None = None, command: str = "") -> OverloadReport:
    """``fusion_node`` in this process with slowed encoders; ``cmr-fusion replay BAG --rate R`` feeds it."""
    import psutil

    from cmr_fusion_ros.core.pipeline import FusionPipeline

    pipeline = FusionPipeline.from_config(config)
    pipeline.encoders = {m: SlowEncoder(e, delay_s) for m, e in pipeline.encoders.items()}
    report = OverloadReport(command=command, machine=machine_line(), rate=rate, encoder_delay_ms=delay_s * 1e3)
    me = psutil.Process()
    spinning = SpinningFusionNode(pipeline, config, num_threads=2)  # its own rclpy context, spun in a thread
    node = spinning.node
    argv = [sys.executable, "-m", "cmr_fusion_ros.cli", "replay", str(bag), "--rate", str(rate)]
    report.queue_size = {m.value: st.queue_size for m, st in node.streams.items()}
    t0 = time.monotonic()
    replay = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while replay.poll() is None and (not duration_s or time.monotonic() - t0 < duration_s):
            report.rss_mb.append(me.memory_info().rss / 2**20)
            for m, st in node.streams.items():
                report.max_queue[m.value] = max(report.max_queue.get(m.value, 0), len(st.queue))
            time.sleep(0.02)
    finally:
        if replay.poll() is None:
            replay.send_signal(signal.SIGINT)
            replay.wait(timeout=30)
        time.sleep(1.0)
        report.wall_s = time.monotonic() - t0
        report.streams = {m.value: s.summary() for m, s in node.stats.items()}
        spinning.close()
    return report


def soak_run(bag: str | Path, params_file: str | Path, *, duration_s: float, interval_s: float = 60.0,
             sample_s: float = 1.0, env: dict | None = None, command: str = "",
             progress: Callable[[float], None] | None = None, log: Path | None = None,
             launch_args: Sequence[str] = (), replay_args: Sequence[str] = ()) -> SoakReport:
    """Launch the graph with ``params_file``, replay ``bag`` in a loop for ``duration_s``, sample RSS and latency.
    ``launch_args`` / ``replay_args`` are added to the two commands (e.g. ``--node-module``, ``--rate``)."""
    import psutil


    report = SoakReport(command=command, machine=machine_line(), duration_s=duration_s, interval_s=interval_s)
    logf = open(log, "w") if log else subprocess.DEVNULL
    launcher = subprocess.Popen([sys.executable, "-m", "cmr_fusion_ros.cli", "launch", "--params", str(params_file),
                                 *launch_args],
                                stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    replay = None
    latest: dict[str, dict] = {}
    listener = DiagnosticsListener(latest)  # its own rclpy context, spun in a thread
    try:
        node_proc = None
        deadline = time.monotonic() + 120
        while node_proc is None and time.monotonic() < deadline:
            if launcher.poll() is not None:
                raise RuntimeError(f"the launcher exited with {launcher.returncode} (see {log})")
            for child in psutil.Process(launcher.pid).children(recursive=True):
                try:
                    if any("__node:=fusion_node" in a for a in child.cmdline()):
                        node_proc = child
                except psutil.Error:
                    pass
            time.sleep(0.2)
        if node_proc is None:
            raise RuntimeError("fusion_node did not start in 120 s")
        while "memory" not in latest and time.monotonic() < deadline:  # the node is up when it publishes
            time.sleep(0.2)
        replay = subprocess.Popen([sys.executable, "-m", "cmr_fusion_ros.cli", "replay", str(bag), "--loop",
                                   *replay_args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                  start_new_session=True)
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < duration_s:
            if launcher.poll() is not None or replay.poll() is not None:
                report.errors.append(f"a child exited early at {t:.0f} s (launcher {launcher.returncode}, replay "
                                     f"{replay.returncode})")
                break
            sample: dict[str, Any] = {"t_s": round(t, 2), "rss_mb": node_proc.memory_info().rss / 2**20}
            for name, values in list(latest.items()):
                if name == "memory":
                    sample["entries"] = int(values.get("entries", 0))
                    sample["time_jumps"] = int(values.get("time_jumps", 0))
                else:
                    sample[name] = {k: float(values[k]) for k in ("latency_p99_ms", "latency_p50_ms", "processed",
                                                                  "dropped", "bad_messages") if k in values}
            report.samples.append(sample)
            if progress is not None:
                progress(t)
            time.sleep(max(0.0, t0 + len(report.samples) * sample_s - time.monotonic()))
    finally:
        if replay is not None:
            _stop_group(replay, 20)
        _stop_group(launcher, 60)
        report.launcher_exit = launcher.returncode
        listener.close()
        if log:
            logf.close()
    summarise_soak(report)
    return report


def _stop_group(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT to the process group of ``proc`` (a clean stop), SIGKILL when it has not ended within ``timeout_s``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
