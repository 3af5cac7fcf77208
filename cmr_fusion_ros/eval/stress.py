"""Reliability stress runs: SIGKILL while the memory is written (crash), overload, and long replays (soak).

* :func:`crash_stress` starts a pipeline child (``python -m cmr_fusion_ros.eval.stress child ...``: the offline
  pipeline of ``cmr-fusion process`` on a bag, with a persistent memory flushed every ``flush_interval_s``), kills it
  with SIGKILL at a random moment, reloads the memory and checks it, and repeats. *Flushed* is what the child itself
  reports: after each frame it prints ``DURABLE <id>`` when the memory has no pending journal records, i.e. every
  entry up to that id was written and fsynced (or is in a snapshot). Lost = a reported-durable entry, or an entry
  present at the previous successful load, that is missing after the kill.
* ``overload_run`` runs ``fusion_node`` in this process with every encoder slowed down, and replays a bag faster
  than real time into it: the latest-wins queues must keep the latency bounded and count the drops.
* ``soak_run`` launches the live graph (``cmr-fusion launch``), replays a bag in a loop (``cmr-fusion replay
  --loop``), and samples the RSS of the node process and the latencies it reports on ``/diagnostics``.

Each returns a report (JSON-ready dataclass); the ``cmr-fusion stress`` command prints it and writes JSON + a PNG.
This module imports no ROS and holds the crash run, the reports and the soak figures; the two runs of ROS nodes
(:func:`~cmr_fusion_ros.ros.stress_runs.overload_run`, :func:`~cmr_fusion_ros.ros.stress_runs.soak_run`) are in
:mod:`cmr_fusion_ros.ros.stress_runs`, the node and the ``/diagnostics`` listener in
:mod:`cmr_fusion_ros.ros.stress_nodes`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CrashReport", "OverloadReport", "SlowEncoder", "SoakReport", "crash_stress", "machine_line", "plot_soak",
           "stress_config", "summarise_soak", "write_json", "write_soak_params"]


# --- configuration --------------------------------------------------------------------------------------------------

def stress_config(params: str | Path, *, models: str | Path | None = None, memory_dir: str | Path | None = None,
                  node_name: str = "fusion_node", **memory_overrides: Any):
    """A FusionConfig from a parameter file with the models folder, the memory folder and memory settings
    (``flush_interval_s``, ``snapshot_every_n``, ``max_entries``) replaced."""
    from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file

    config = FusionConfig.from_dict(load_parameter_file(params, node_name), source=str(params))
    mem = config.memory
    pers = mem.persistence
    if memory_dir is not None:
        pers = dataclasses.replace(pers, directory=str(memory_dir))
    for key in ("flush_interval_s", "snapshot_every_n"):
        if memory_overrides.get(key) is not None:
            pers = dataclasses.replace(pers, **{key: memory_overrides[key]})
    mem = dataclasses.replace(mem, persistence=pers)
    if memory_overrides.get("max_entries") is not None:
        mem = dataclasses.replace(mem, capacity=dataclasses.replace(mem.capacity,
                                                                     max_entries=memory_overrides["max_entries"]))
    enc = config.encoders if models is None else dataclasses.replace(config.encoders, models_dir=str(models))
    return dataclasses.replace(config, memory=mem, encoders=enc)


def machine_line() -> str:
    try:
        from cmr_fusion_ros.machine import machine_summary

        return machine_summary()
    except Exception:  # the machine line is informative only
        import platform

        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


# --- crash ----------------------------------------------------------------------------------------------------------

def run_child(bags: Sequence[str | Path], config, *, encoders: dict | None = None,
              emit: Callable[[str], None] = lambda s: print(s, flush=True)) -> int:
    """The pipeline child of the crash stress: process ``bags`` into the persistent memory of ``config`` and report
    ``LOADED <entries> <last id>`` once the memory is open, ``DURABLE <id>`` whenever everything up to ``id`` is on
    disk, and ``DONE <entries>`` at the end."""
    from cmr_fusion_ros.bag.offline import process_bags
    from cmr_fusion_ros.core.memory import SceneMemory
    from cmr_fusion_ros.core.pipeline import FusionPipeline
    from cmr_fusion_ros.core.poses import PoseBuffer

    if encoders is None:
        pipeline = FusionPipeline.from_config(config)
    else:
        memory = SceneMemory.open(os.path.expanduser(config.memory.persistence.directory), config.memory)
        poses = PoseBuffer(max_gap_ns=round(config.odometry.max_gap_s * 1e9),
                           max_extrapolation_ns=round(config.odometry.max_extrapolation_s * 1e9)) \
            if config.odometry.topic else None
        pipeline = FusionPipeline(config, encoders, memory, poses=poses)
    mem = pipeline.memory
    ids = mem.ids()
    emit(f"LOADED {len(mem)} {int(ids[-1]) if len(ids) else 0}")
    durable = [int(ids[-1]) if len(ids) else 0]

    def on_output(_res) -> None:
        st = mem.stats()
        if st.pending_records == 0 and st.next_id - 1 > durable[0]:
            durable[0] = st.next_id - 1
            emit(f"DURABLE {durable[0]}")

    summary = process_bags(bags, config, pipeline=pipeline, progress=False, on_output=on_output)
    emit(f"DONE {summary.memory_entries}")
    return 0


@dataclass
class CrashReport:
    command: str
    machine: str
    kills: int = 0
    runs_finished: int = 0  # runs that ended before their kill came
    kills_before_load: int = 0
    reloads_ok: int = 0
    entries_lost: int = 0
    reload_errors: list[str] = field(default_factory=list)
    durable_max: int = 0
    final_entries: int = 0
    torn_tails: int = 0
    load_s: list[float] = field(default_factory=list)
    kill_after_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.entries_lost == 0 and not self.reload_errors and self.reloads_ok == self.kills

    def lines(self) -> list[str]:
        return [
            f"kills: {self.kills} (SIGKILL at {min(self.kill_after_s, default=0):.2f}..{max(self.kill_after_s, default=0):.2f} s"
            f" after start; {self.kills_before_load} before the memory was loaded; {self.runs_finished} runs finished "
            f"before their kill)",
            f"reloads without error: {self.reloads_ok}/{self.kills}; entries lost: {self.entries_lost}; "
            f"reload errors: {len(self.reload_errors)}",
            f"last durable id reported: {self.durable_max}; entries at the end: {self.final_entries}; reloads that "
            f"met a torn journal tail: {self.torn_tails}",
            f"memory load time p50 {np.percentile(self.load_s, 50) * 1e3 if self.load_s else 0:.0f} ms, max "
            f"{max(self.load_s, default=0) * 1e3:.0f} ms; wall {self.wall_s:.0f} s",
            "result: " + ("PASS (every flushed entry survived every kill)" if self.ok else "FAIL"),
        ]


def _read_until(proc: subprocess.Popen, deadline: float, lines: list[str], stop: Callable[[], bool]) -> None:
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline and not stop():
        ready, _, _ = select.select([fd], [], [], max(0.0, min(0.05, deadline - time.monotonic())))
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *complete, buf = buf.split(b"\n")
        lines += [c.decode(errors="replace") for c in complete]


def crash_stress(child_argv: Sequence[str], memory_dir: str | Path, memory_config, *, kills: int = 50,
                 seed: int = 0, max_delay_s: float = 4.0, env: dict | None = None, command: str = "",
                 progress: Callable[[int, CrashReport], None] | None = None) -> CrashReport:
    """Kill the child ``kills`` times at random moments (uniform in ``[0.05, max_delay_s]`` s after its start),
    reloading and checking the memory in ``memory_dir`` after each kill (read-only, as a writer every third time)."""
    from cmr_fusion_ros.core.errors import CmrFusionError
    from cmr_fusion_ros.core.memory import SceneMemory
    from cmr_fusion_ros.core.memory.scene import never_created

    rng = np.random.default_rng(seed)
    report = CrashReport(command=command, machine=machine_line())
    memory_dir = Path(memory_dir)
    known: set[int] = set()  # ids present at the previous successful load
    t_start = time.monotonic()
    for k in range(kills):
        delay = float(rng.uniform(0.05, max_delay_s))
        proc = subprocess.Popen(list(child_argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        lines: list[str] = []
        try:
            _read_until(proc, time.monotonic() + delay, lines, lambda: False)
            finished = proc.poll() is not None
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            _read_until(proc, time.monotonic() + 2.0, lines, lambda: False)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
            proc.stdout.close()
        report.kills += 1
        report.kill_after_s.append(delay)
        report.runs_finished += int(finished and proc.returncode == 0)
        report.kills_before_load += int(not any(line.startswith("LOADED") for line in lines))
        for line in lines:
            if line.startswith("DURABLE"):
                report.durable_max = max(report.durable_max, int(line.split()[1]))
        if not known and not report.durable_max and never_created(memory_dir):
            report.reloads_ok += 1  # killed before the memory was created: nothing to lose yet
            if progress is not None:
                progress(k + 1, report)
            continue
        t0 = time.perf_counter()
        try:
            mem = SceneMemory.open(memory_dir, memory_config, read_only=k % 3 != 2)
        except CmrFusionError as err:
            report.reload_errors.append(f"kill {k + 1}: {err}")
            continue
        try:
            report.load_s.append(time.perf_counter() - t0)
            ids = set(int(i) for i in mem.ids())
            required = known | set(range(1, report.durable_max + 1))
            lost = required - ids
            report.entries_lost += len(lost)
            if lost:
                report.reload_errors.append(f"kill {k + 1}: {len(lost)} flushed entries missing, e.g. {sorted(lost)[:5]}")
            for i in sorted(ids)[-3:]:  # the newest entries read back whole
                e = mem.get(i)
                if e is None or not np.isfinite(e.vector).all() or abs(float(np.linalg.norm(e.vector)) - 1) > 1e-3:
                    report.reload_errors.append(f"kill {k + 1}: entry {i} unreadable or not normalised")
            report.torn_tails += int(mem.stats().torn_tail_bytes > 0)
            report.final_entries = len(mem)
            known = ids
            report.reloads_ok += 1
        finally:
            mem.close()
        if progress is not None:
            progress(k + 1, report)
    report.wall_s = time.monotonic() - t_start
    return report


# --- overload -------------------------------------------------------------------------------------------------------

class SlowEncoder:
    """Wraps an encoder and sleeps ``delay_s`` per item: a slow accelerator or an overloaded CPU, on purpose."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.delay_s = delay_s

    def encode(self, items):
        time.sleep(self.delay_s * len(items))
        return self.inner.encode(items)


@dataclass
class OverloadReport:
    command: str
    machine: str
    rate: float
    encoder_delay_ms: float
    streams: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)
    max_queue: dict[str, int] = field(default_factory=dict)
    queue_size: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def lines(self) -> list[str]:
        out = [f"replay at {self.rate:g}x real time, encoders slowed by {self.encoder_delay_ms:g} ms per frame"]
        for m, s in self.streams.items():
            out.append(f"  {m}: received {s['received']}, processed {s['processed']}, dropped {s['dropped']} "
                       f"({100 * s['dropped'] / max(1, s['received']):.0f} %), bad {s['bad_messages']}; latency p50 "
                       f"{s['latency_p50_ms']:.0f} ms p99 {s['latency_p99_ms']:.0f} ms; queue max "
                       f"{self.max_queue.get(m, 0)}/{self.queue_size.get(m, 0)}")
        if self.rss_mb:
            out.append(f"RSS {self.rss_mb[0]:.0f} MB -> {self.rss_mb[-1]:.0f} MB (max {max(self.rss_mb):.0f} MB) "
                       f"over {self.wall_s:.0f} s")
        return out


# --- soak -----------------------------------------------------------------------------------------------------------

@dataclass
class SoakReport:
    command: str
    machine: str
    duration_s: float
    interval_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)  # t_s, rss_mb, per-stream p99/processed/dropped
    intervals: list[dict[str, Any]] = field(default_factory=list)
    rss_growth_pct: float = 0.0
    loops: int = 0
    launcher_exit: int | None = None
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"soak {self.duration_s:.0f} s, {len(self.samples)} samples, bag loops ~{self.loops}"]
        for iv in self.intervals:
            p99 = ", ".join(f"{m} {v:.0f}" for m, v in iv["latency_p99_ms"].items())
            out.append(f"  {iv['start_s']:6.0f}-{iv['end_s']:6.0f} s: RSS {iv['rss_mb']:.1f} MB; latency p99 (ms) {p99}; "
                       f"processed {iv['processed']}, dropped {iv['dropped']}")
        out.append(f"RSS growth ({'second' if len(self.intervals) >= 3 else 'first'} interval -> last): "
                   f"{self.rss_growth_pct:+.1f} %")
        out.append(f"launcher exit code: {self.launcher_exit}" + (f"; errors: {self.errors}" if self.errors else ""))
        return out


def write_soak_params(params: str | Path, out: Path, *, max_entries: int = 5000, models: Path | None = None,
                      node_name: str = "fusion_node") -> Path:
    """``out/soak_params.yaml``: ``params`` with the memory in ``out/memory`` (emptied) capped at ``max_entries``
    (a steady state, so RSS growth means a leak, not a fuller memory) and the models folder."""
    import shutil

    from cmr_fusion_ros.core.config import flatten, load_parameter_file, render_parameter_file, unflatten

    values = flatten(load_parameter_file(params, node_name))
    values["memory.persistence.directory"] = str((out / "memory").resolve())
    values["memory.capacity.max_entries"] = int(max_entries)
    if models is not None:
        values["encoders.models_dir"] = str(Path(models).resolve())
    if (out / "memory").exists():
        shutil.rmtree(out / "memory")
    path = out / "soak_params.yaml"
    path.write_text(render_parameter_file({node_name: unflatten(values)}, "written by cmr-fusion stress soak"))
    return path


def summarise_soak(report: SoakReport) -> None:
    samples = report.samples
    if not samples:
        return
    streams = sorted({k for s in samples for k, v in s.items() if isinstance(v, dict)})
    end = samples[-1]["t_s"]
    start = 0.0
    while start < end:
        stop = min(start + report.interval_s, end + 1e-9)
        part = [s for s in samples if start <= s["t_s"] < stop or (stop >= end and s["t_s"] == end)]
        if part:
            iv = {"start_s": start, "end_s": min(stop, end), "rss_mb": float(np.mean([s["rss_mb"] for s in part])),
                  "latency_p99_ms": {}, "processed": 0, "dropped": 0}
            for m in streams:
                vals = [s[m]["latency_p99_ms"] for s in part if m in s and "latency_p99_ms" in s[m]]
                if vals:
                    iv["latency_p99_ms"][m] = float(np.median(vals))
                first = next((s[m] for s in part if m in s), None)
                last = next((s[m] for s in reversed(part) if m in s), None)
                if first and last:
                    iv["processed"] += int(last.get("processed", 0) - first.get("processed", 0))
                    iv["dropped"] += int(last.get("dropped", 0) - first.get("dropped", 0))
            report.intervals.append(iv)
        start = stop
    if len(report.intervals) >= 2:  # baseline: the first interval after the warm-up one (when there are 3+)
        base = report.intervals[1] if len(report.intervals) >= 3 else report.intervals[0]
        a, b = base["rss_mb"], report.intervals[-1]["rss_mb"]
        report.rss_growth_pct = 100.0 * (b - a) / a if a else 0.0
    report.loops = max((s.get("time_jumps", 0) for s in samples), default=0)


def plot_soak(report: SoakReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in report.samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(t, [s["rss_mb"] for s in report.samples], color="tab:blue")
    ax1.set_ylabel("fusion_node RSS (MB)")
    ax1.set_title(f"soak: {report.duration_s / 60:.1f} min, RSS growth {report.rss_growth_pct:+.1f} %")
    streams = sorted({k for s in report.samples for k, v in s.items() if isinstance(v, dict)})
    for m in streams:
        pts = [(s["t_s"] / 60, s[m]["latency_p99_ms"]) for s in report.samples if m in s and "latency_p99_ms" in s[m]]
        if pts:
            ax2.plot(*zip(*pts), label=f"{m} p99")
    ax2.set_ylabel("latency p99 (ms, rolling)")
    ax2.set_xlabel("minutes")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(report: Any, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), indent=2))


# --- the crash child entry point ------------------------------------------------------------------------------------

def _child_main(argv: Sequence[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cmr_fusion_ros.eval.stress child")
    p.add_argument("bags", nargs="+")
    p.add_argument("--params", required=True)
    p.add_argument("--models", default=None)
    p.add_argument("--memory", required=True)
    p.add_argument("--flush-interval", type=float, default=0.05)
    p.add_argument("--snapshot-every", type=int, default=500)
    args = p.parse_args(argv)
    config = stress_config(args.params, models=args.models, memory_dir=args.memory,
                           flush_interval_s=args.flush_interval, snapshot_every_n=args.snapshot_every)
    return run_child(args.bags, config)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.exit(_child_main(sys.argv[2:]))
    print("usage: python -m cmr_fusion_ros.eval.stress child BAG... --params P --memory DIR [--models M]")
    sys.exit(2)
