"""Throughput benchmark: the real-time factor of offline processing, and the encoder wrapper against bare
onnxruntime on the same model and inputs.

* **Real-time factor**: ``process_bags`` (the ``cmr-fusion process`` code path: decode, sync, preprocess, encode,
  search, insert, JSONL + mcap output) on a bag, bag duration / wall time, with the process CPU time beside it.
* **Wrapper vs bare**: for each modality, :meth:`OnnxEncoder.encode_tensors` (shape check, contiguous copy, batch
  loop, L2 normalisation) against ``InferenceSession.run`` of a second session opened with the same options on the
  same file, fed the same preprocessed tensors. Calls are interleaved (wrapper, bare, bare, wrapper, ...: the order
  alternates per iteration) so load from other processes hits both alike; the ratio is of the medians.
  The inputs are the bag's own frames, preprocessed with the model card's preprocessing, when a bag is given,
  else seeded normal noise of the input shape (the network's cost does not depend on the values).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.cli_options import add_look_ahead, add_no_progress, add_params_file
from cmr_fusion_ros.core.types import Modality

__all__ = ["EncoderOverhead", "OfflineRun", "add_arguments", "encoder_overhead", "encoder_inputs", "realtime_factor", "run"]


def _cpu_s() -> float:
    """CPU seconds of this process and of its ended children (the look-ahead's worker processes)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


@dataclass
class OfflineRun:
    bags: list[str]
    bag_duration_s: float
    wall_s: float
    realtime_factor: float
    cpu_s: float
    messages: int
    frames: int  # sensor frames processed
    events: int
    memory_entries: int
    loadavg_before: list[float]
    loadavg_after: list[float]
    encode_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    search_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def cpu_realtime_factor(self) -> float:
        """Bag seconds per CPU second of this process (less sensitive to other load than the wall figure)."""
        return self.bag_duration_s / self.cpu_s if self.cpu_s > 0 else 0.0


def realtime_factor(bags: Sequence[str | Path], config, *, out_dir: str | Path | None = None,
                    progress: bool = False, look_ahead: int | None = None) -> OfflineRun:
    """Process ``bags`` once with ``config`` (memory in a fresh temporary folder unless the config names one;
    ``look_ahead``: ``process_bags``'s, default its default)."""
    import dataclasses

    from cmr_fusion_ros.bag.offline import DEFAULT_LOOK_AHEAD, process_bags

    with tempfile.TemporaryDirectory(prefix="cmr_bench_offline_") as tmp:
        out = Path(out_dir) if out_dir is not None else Path(tmp)
        if not config.memory.persistence.directory or out_dir is None:
            config = dataclasses.replace(config, memory=dataclasses.replace(
                config.memory, persistence=dataclasses.replace(config.memory.persistence,
                                                               directory=str(Path(tmp) / "memory"))))
        la0 = list(os.getloadavg())
        cpu0 = _cpu_s()
        summary = process_bags(bags, config, out_dir=out, progress=progress,
                               look_ahead=DEFAULT_LOOK_AHEAD if look_ahead is None else look_ahead)
        cpu = _cpu_s() - cpu0
        la1 = list(os.getloadavg())
    return OfflineRun(
        bags=[str(b) for b in bags], bag_duration_s=summary.bag_duration_s, wall_s=summary.wall_s,
        realtime_factor=summary.realtime_factor, cpu_s=cpu, messages=summary.messages,
        frames=sum(summary.frames.values()), events=summary.events, memory_entries=summary.memory_entries,
        loadavg_before=[round(x, 2) for x in la0], loadavg_after=[round(x, 2) for x in la1],
        encode_ms=summary.encode_ms, search_ms=summary.search_ms)


def encoder_inputs(encoder, n: int, *, bag: str | Path | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` preprocessed input tensors (N, C, H, W) for ``encoder`` and where they came from."""
    shape = encoder.card.input_shape
    if bag is not None:
        from cmr_fusion_ros.bag.reader import read_samples
        from cmr_fusion_ros.core.embed import decode_size
        from cmr_fusion_ros.core.preprocess import batch as preprocess_batch

        items = []
        with contextlib.closing(read_samples(bag, modalities=(encoder.modality,), require_pose=False,
                                             camera_size=decode_size(encoder.preprocessing))) as samples:
            for s in samples:
                items.append(s.data)
                if len(items) >= n:
                    break
        if items:
            x = preprocess_batch(encoder.preprocessing, items)
            reps = -(-n // x.shape[0])
            return np.ascontiguousarray(np.concatenate([x] * reps)[:n], dtype=np.float32), f"{len(items)} frames of {bag}"
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape), dtype=np.float32), f"seeded normal noise {shape}"


@dataclass
class EncoderOverhead:
    modality: str
    batch: int
    iterations: int
    inputs: str
    wrapper_ms: dict[str, float]
    bare_ms: dict[str, float]
    ratio_p50: float
    ratio_mean: float
    max_abs_diff: float  # between the wrapper's output and the bare output normalised the same way

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stats(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()),
            "min": float(ms.min())}


def encoder_overhead(model: str | Path, *, batch: int = 1, iterations: int = 200, warmup: int = 10,
                     bag: str | Path | None = None, intra_op_threads: int = 1, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> EncoderOverhead:
    """Time :meth:`OnnxEncoder.encode_tensors` against a bare ``InferenceSession.run`` (see the module docstring)."""
    import onnxruntime as ort

    from cmr_fusion_ros.core.encoder import EncoderConfig, OnnxEncoder

    enc = OnnxEncoder(EncoderConfig(model_path=str(model), intra_op_threads=intra_op_threads, inter_op_threads=1,
                                    batch_size=max(1, batch), warmup_runs=0))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    bare = ort.InferenceSession(str(model), sess_options=opts, providers=list(enc.providers))
    in_name, out_name = enc.card.input_name, enc.card.output_name
    n_inputs = max(batch, min(64, batch * 8))
    x, source = encoder_inputs(enc, n_inputs, bag=bag, seed=seed)
    batches = [x[i:i + batch] for i in range(0, n_inputs - batch + 1, batch)]

    w = enc.encode_tensors(batches[0])
    b = bare.run([out_name], {in_name: batches[0]})[0]
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    diff = float(np.abs(w - b).max())

    wrapper_ns = np.empty(iterations, dtype=np.int64)
    bare_ns = np.empty(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(-warmup, iterations):
        xb = batches[i % len(batches)]
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            if which == 0:
                t0 = clock()
                enc.encode_tensors(xb)
                dt = clock() - t0
                if i >= 0:
                    wrapper_ns[i] = dt
            else:
                t0 = clock()
                bare.run([out_name], {in_name: xb})
                dt = clock() - t0
                if i >= 0:
                    bare_ns[i] = dt
        if progress is not None and i >= 0:
            progress(i)
    wm, bm = wrapper_ns / 1e6, bare_ns / 1e6
    ws, bs = _stats(wm), _stats(bm)
    return EncoderOverhead(enc.modality.value, batch, iterations, source, ws, bs, ws["p50"] / bs["p50"],
                           ws["mean"] / bs["mean"], diff)


def model_files(models_dir: str | Path, modalities: Sequence[Modality | str] = tuple(Modality)) -> dict[str, Path]:
    from cmr_fusion_ros.core.encoder import model_path

    return {Modality(m).value: model_path(models_dir, m) for m in modalities}


# --- command line: `cmr-fusion bench offline` ----------------------------------------------------------------------

WRAPPER_GOAL = 1.10
RTF_GOAL = 20.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="bag(s) processed together (merged in time)")
    p.add_argument("--models", type=Path, default=None, help="models folder (default: the installed models)")
    add_params_file(p, "parameters YAML (default: the installed fusion.yaml)")
    p.add_argument("--repeats", type=int, default=1, help="times the bag is processed, fresh memory each (default 1)")
    p.add_argument("--iterations", type=int, default=200, help="timed encoder calls per modality and side (default 200)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="encoder batch sizes (default: 1)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads, both sides (default 1)")
    add_look_ahead(p)
    p.add_argument("--skip-process", action="store_true", help="only the encoder comparison")
    p.add_argument("--json", type=Path, default=None, metavar="FILE.json", help="report (FILE.json + FILE.md)")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="wrapper vs bare latency per modality")
    add_no_progress(p)


def _command(args: argparse.Namespace) -> str:
    parts = [*map(str, args.bags)]
    for key in ("models", "params"):
        if getattr(args, key):
            parts += [f"--{key}", str(getattr(args, key))]
    parts += ["--repeats", str(args.repeats), "--iterations", str(args.iterations), "--batch", *map(str, args.batch),
              "--threads", str(args.threads), "--look-ahead", str(args.look_ahead)]
    parts += ["--skip-process"] if args.skip_process else []
    for key in ("json", "plot"):
        if getattr(args, key):
            parts += [f"--{key}", str(getattr(args, key))]
    return "cmr-fusion bench offline " + shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm import tqdm

    from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file
    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.eval.report import Report, Table, finish_report, load_average, versions
    from cmr_fusion_ros.paths import config_file, models_dir

    if args.repeats < 1 or args.iterations < 1 or any(b < 1 for b in args.batch):
        raise ConfigError("--repeats/--iterations/--batch", (args.repeats, args.iterations, args.batch), "integers >= 1")
    command = _command(args)
    report = Report("Throughput: offline real-time factor and encoder wrapper vs bare onnxruntime", command,
                    versions=versions("onnxruntime", "faiss", "rosbags"))
    print(f"command: {command}")
    print(f"machine: {report.machine['summary']}; load average {report.machine['loadavg']}")
    params = args.params or config_file("fusion.yaml")
    config = FusionConfig.from_dict(load_parameter_file(params, "fusion_node"), source=str(params))
    if args.models:
        config = dataclasses.replace(config, encoders=dataclasses.replace(config.encoders, models_dir=str(args.models)))
    mdir = Path(config.encoders.models_dir) if config.encoders.models_dir else models_dir()
    report.settings = {"bags": [str(b) for b in args.bags], "params": str(params), "models": str(mdir),
                       "encoder threads": args.threads, "batch sizes": args.batch, "iterations": args.iterations,
                       "look-ahead": args.look_ahead}
    summary: list[str] = []
    figures: dict[str, Any] = {"process": [], "encoders": []}

    if not args.skip_process:
        for r in range(args.repeats):
            run_ = realtime_factor(args.bags, config, progress=sys.stderr.isatty() and not args.no_progress,
                                   look_ahead=args.look_ahead)
            figures["process"].append({**run_.__dict__, "cpu_realtime_factor": run_.cpu_realtime_factor})
            line = (f"process run {r + 1}/{args.repeats}: bag {run_.bag_duration_s:.1f} s in {run_.wall_s:.1f} s wall = "
                    f"{run_.realtime_factor:.1f}x real time ({run_.cpu_s:.1f} CPU s = {run_.cpu_realtime_factor:.1f}x "
                    f"per CPU s); {run_.messages} messages, {run_.frames} frames, {run_.events} events; "
                    f"load average {run_.loadavg_before[0]:.1f} -> {run_.loadavg_after[0]:.1f}")
            print(line, flush=True)
        best = max(p["realtime_factor"] for p in figures["process"])
        med = float(np.median([p["realtime_factor"] for p in figures["process"]]))
        ok = best >= RTF_GOAL
        summary.append(f"offline real-time factor: median {med:.1f}x, best {best:.1f}x over {args.repeats} run(s) "
                       f"(goal >= {RTF_GOAL:g}x: {'MET' if ok else 'NOT MET'})")
        report.tables.append(Table("process (offline pipeline)", ["run", "bag s", "wall s", "x real time",
                                                                  "CPU s", "x per CPU s", "events", "load avg"],
                                   [[i + 1, p["bag_duration_s"], p["wall_s"], p["realtime_factor"], p["cpu_s"],
                                     p["cpu_realtime_factor"], p["events"], p["loadavg_before"][0]]
                                    for i, p in enumerate(figures["process"])]))

    rows = []
    files = model_files(mdir, config.enabled_modalities)
    steps = len(files) * len(args.batch) * args.iterations
    bar = tqdm(total=steps, desc="encoders", file=sys.stderr, leave=False,
               disable=args.no_progress or not sys.stderr.isatty())
    for batch in args.batch:
        for modality, path in files.items():
            la = load_average()[0]
            res = encoder_overhead(path, batch=batch, iterations=args.iterations, bag=args.bags[0],
                                   intra_op_threads=args.threads, progress=lambda i: bar.update(1))
            d = res.to_dict()
            d["loadavg"] = la
            figures["encoders"].append(d)
            rows.append([modality, batch, res.wrapper_ms["p50"], res.bare_ms["p50"], res.ratio_p50, res.ratio_mean,
                         res.wrapper_ms["p99"], res.bare_ms["p99"], f"{res.max_abs_diff:.1e}", la])
            tqdm.write(f"encoder {modality} batch {batch}: wrapper p50 {res.wrapper_ms['p50']:.3f} ms, bare "
                       f"{res.bare_ms['p50']:.3f} ms, ratio {res.ratio_p50:.3f} (mean ratio {res.ratio_mean:.3f}); "
                       f"inputs: {res.inputs}; load average {la:.1f}", file=sys.stdout)
    bar.close()
    worst = max(e["ratio_p50"] for e in figures["encoders"])
    summary.append(f"encoder wrapper / bare onnxruntime (median per call): worst {worst:.3f} over "
                   f"{len(figures['encoders'])} modality x batch cases (goal <= {WRAPPER_GOAL:.2f}: "
                   f"{'MET' if worst <= WRAPPER_GOAL else 'NOT MET'})")
    report.tables.append(Table("encoder wrapper vs bare onnxruntime (ms per call)",
                               ["modality", "batch", "wrapper p50", "bare p50", "ratio p50", "ratio mean",
                                "wrapper p99", "bare p99", "max abs diff", "load avg"], rows,
                               "wrapper = OnnxEncoder.encode_tensors (checks, batching, L2 norm); bare = "
                               "InferenceSession.run with the same options; calls interleaved, order alternating"))
    for line in summary:
        print(line)
    report.summary = summary
    report.figures = figures
    finish_report(report, args.plot, args.json, lambda path: _plot(figures["encoders"], path, command))
    return 0


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['modality']}\nbatch {r['batch']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 4))
    ax.bar(x - 0.2, [r["wrapper_ms"]["p50"] for r in rows], 0.4, label="OnnxEncoder.encode_tensors")
    ax.bar(x + 0.2, [r["bare_ms"]["p50"] for r in rows], 0.4, label="bare InferenceSession.run")
    for xi, r in zip(x, rows):
        ax.text(xi, max(r["wrapper_ms"]["p50"], r["bare_ms"]["p50"]), f"x{r['ratio_p50']:.2f}", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("median ms per call")
    import textwrap

    ax.set_title(textwrap.fill(title, 90), fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
