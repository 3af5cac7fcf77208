"""Cross-modal retrieval evaluation of ONNX encoders on two bags (database and queries), and encoder latency.

Every sensor sample of each bag is embedded by its modality's encoder, positioned by the bag's odometry, and every
query modality -> database modality pair (9 pairs) is scored with recall@1/5/10 and recall@1%
(:mod:`cmr_fusion_ros.eval.recall`). With ``lidar_views`` N > 1, LiDAR queries search LiDAR entries with the scan
seen at N headings, the turned views' scores lowered by ``view_penalty``, as the runtime does
(``encoders.lidar_views``, ``policy.turned_view_penalty``); the database keeps the scans as they are.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.bag.reader import BagTopics, count_rejected, read_samples
from cmr_fusion_ros.core.config import InputLimits
from cmr_fusion_ros.core.decode import DEFAULT_LIMITS
from cmr_fusion_ros.core.embed import FrameEmbedder
from cmr_fusion_ros.core.encoder import OnnxEncoder
from cmr_fusion_ros.core.errors import BagError, ConfigError
from cmr_fusion_ros.core.rig import RigOptions, rig_adapters
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.recall import HEADING_GAP_BINS, RecallResult, recall_at_k

__all__ = [
    "BagEmbeddings",
    "EvalReport",
    "embed_bag",
    "evaluate",
    "format_heading_gaps",
    "format_table",
    "measure_latency",
    "plot_report",
]

MODALITIES = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)


@dataclass(frozen=True)
class BagEmbeddings:
    """Per modality: embeddings (N, D), positions (N, 3), stamps (N,), headings (N,) in radians; ``views``: the
    LiDAR scans seen at the other headings (N, views - 1, D) when embedded with ``lidar_views`` > 1."""

    path: str
    embeddings: dict[Modality, np.ndarray]
    positions: dict[Modality, np.ndarray]
    stamps_ns: dict[Modality, np.ndarray]
    yaws: dict[Modality, np.ndarray] = field(default_factory=dict)
    views: dict[Modality, np.ndarray] = field(default_factory=dict)


def embed_bag(
    path: str | Path,
    encoders: Mapping[Modality, OnnxEncoder],
    topics: BagTopics | None = None,
    *,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
    lidar_views: int = 1,
    dropped: dict[str, int] | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    rig: RigOptions | None = None,
    rejected: dict[str, int] | None = None,
) -> BagEmbeddings:
    """Embed every sample of the encoders' modalities in a bag (samples without an odometry pose are skipped and
    counted per modality in ``dropped``); LiDAR scans at ``lidar_views`` headings (``preprocess.turned_views``).
    Each stream goes through the runtime's route (:class:`~cmr_fusion_ros.core.embed.FrameEmbedder`), batched
    ``batch`` frames per encoder call. With ``rig``, the route first brings each sensor's data to the canonical rig
    with the bag's mounts and camera intrinsics (``core.rig``, ``bag.rig_info``). With ``rejected``, messages the
    decoder rejects are skipped and counted there per topic (``bag.reader.count_rejected``); without it they raise."""
    mods = list(encoders)
    n_views = {m: lidar_views if m is Modality.LIDAR else 1 for m in mods}
    pending: dict[Modality, list[np.ndarray]] = {m: [] for m in mods}
    emb: dict[Modality, list[np.ndarray]] = {m: [] for m in mods}
    pos: dict[Modality, list[tuple[float, float, float]]] = {m: [] for m in mods}
    stamps: dict[Modality, list[int]] = {m: [] for m in mods}
    yaws: dict[Modality, list[float]] = {m: [] for m in mods}

    adapters = rig_adapters(_bag_rig(path, topics), mods, rig) if rig is not None and rig.enabled else {}
    # the runtime's route: rig -> merge -> views -> preprocess -> encode
    routes = {m: FrameEmbedder.of(encoders[m], adapter=adapters.get(m)) for m in mods}

    def flush(m: Modality) -> None:
        if pending[m]:
            x = np.stack(pending[m])  # (n, views, C, H, W)
            out = routes[m].encode(x.reshape(-1, *x.shape[2:]))
            emb[m].append(out.reshape(x.shape[0], x.shape[1], -1))
            pending[m].clear()

    camera = routes[Modality.CAMERA].decode_size if Modality.CAMERA in routes else None
    on_bad = count_rejected(rejected) if rejected is not None else None
    for s in read_samples(path, topics, mods, dropped=dropped, limits=limits, camera_size=camera, on_bad=on_bad):
        pending[s.modality].append(routes[s.modality].tensors(s, s.pose, n_views[s.modality]))
        pos[s.modality].append((s.pose.x, s.pose.y, s.pose.z))
        stamps[s.modality].append(s.stamp_ns)
        yaws[s.modality].append(s.pose.yaw)
        if len(pending[s.modality]) >= batch:
            flush(s.modality)
        if progress is not None:
            progress(1)
    for m in mods:
        flush(m)
        if not pos[m]:
            raise BagError(str(path), f"no {m.value} samples with an odometry pose")
    all_views = {m: np.concatenate(emb[m]) for m in mods}
    return BagEmbeddings(
        str(path),
        {m: all_views[m][:, 0] for m in mods},
        {m: np.asarray(pos[m], np.float64) for m in mods},
        {m: np.asarray(stamps[m], np.int64) for m in mods},
        {m: np.asarray(yaws[m], np.float64) for m in mods},
        {m: all_views[m][:, 1:] for m in mods if n_views[m] > 1},
    )


def _bag_rig(path: str | Path, topics: BagTopics | None):
    from cmr_fusion_ros.bag.rig_info import read_rig

    return read_rig(path, topics)


@dataclass(frozen=True)
class EvalReport:
    database: str
    queries: str
    radius_m: float
    results: dict[tuple[Modality, Modality], RecallResult]  # (query modality, database modality)
    max_yaw_deg: float | None = None
    lidar_views: int = 1
    view_penalty: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "queries": self.queries,
            "radius_m": self.radius_m,
            **({"max_yaw_deg": self.max_yaw_deg} if self.max_yaw_deg is not None else {}),
            "lidar_views": self.lidar_views,
            **({"turned_view_penalty": self.view_penalty} if self.lidar_views > 1 else {}),
            "pairs": {f"{q.value}->{d.value}": r.to_dict() for (q, d), r in self.results.items()},
        }


def evaluate(database: BagEmbeddings, queries: BagEmbeddings, radius: float = 10.0, ks: tuple[int, ...] = (1, 5, 10),
             max_yaw_deg: float | None = None, view_penalty: float = 0.0) -> EvalReport:
    """Recall for every query modality -> database modality pair; ``max_yaw_deg`` also requires positives to face
    within that many degrees of the query (default: any heading). Queries embedded with more views (``views``)
    search the database entries of their own modality with every view, the views' scores lowered by
    ``view_penalty``."""
    results = {}
    for qm in queries.embeddings:
        for dm in database.embeddings:
            kw: dict[str, Any] = {}
            if qm in queries.yaws and dm in database.yaws:  # heading gaps (and the heading condition)
                kw = {"query_yaw": queries.yaws[qm], "db_yaw": database.yaws[dm], "max_yaw_deg": max_yaw_deg}
            elif max_yaw_deg is not None:
                raise ConfigError("max_yaw_deg", max_yaw_deg, "embeddings with headings (yaws)")
            if qm == dm and qm in queries.views:
                kw["query_views"] = queries.views[qm]
                kw["view_penalty"] = view_penalty
            results[(qm, dm)] = recall_at_k(
                queries.embeddings[qm], database.embeddings[dm], queries.positions[qm][:, :2],
                database.positions[dm][:, :2], radius, ks, **kw,
            )
    views = 1 + max((v.shape[1] for v in queries.views.values()), default=0)
    return EvalReport(database.path, queries.path, float(radius), results, max_yaw_deg, views, float(view_penalty))


def _fmt(v: float) -> str:
    return "  n/a" if math.isnan(v) else f"{v:.3f}"


def format_table(report: EvalReport) -> str:
    ks = sorted(next(iter(report.results.values())).recalls)
    head = f"{'query -> database':<18}" + "".join(f"{'R@' + str(k):>8}" for k in ks) + f"{'R@1%':>8}{'queries':>9}{'db':>7}"
    lines = [head, "-" * len(head)]
    for (q, d), r in report.results.items():
        lines.append(
            f"{q.value + ' -> ' + d.value:<18}"
            + "".join(f"{_fmt(r.recalls[k]):>8}" for k in ks)
            + f"{_fmt(r.recall_one_percent):>8}{r.num_counted:>9}{r.num_database:>7}"
        )
    return "\n".join(lines)


def format_heading_gaps(report: EvalReport) -> str:
    """R@1 of each pair split by the queries' heading gap (smallest angle between a query's heading and one of its
    positives'), the number of queries in brackets; '' when the embeddings had no headings."""
    if not any(r.by_heading_gap for r in report.results.values()):
        return ""
    head = f"{'heading gap (deg)':<18}" + "".join(f"{b:>14}" for b in HEADING_GAP_BINS)
    lines = ["R@1 by heading gap to the nearest-heading positive (queries)", head, "-" * len(head)]
    for (q, d), r in report.results.items():
        cells = []
        for b in HEADING_GAP_BINS:
            n, h = r.by_heading_gap.get(b, (0, 0))
            cells.append(f"{_fmt(h / n) if n else '  n/a'} ({n})")
        lines.append(f"{q.value + ' -> ' + d.value:<18}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def plot_report(report: EvalReport, png: str | Path) -> None:
    """A heat map of recall@1 (query modality rows, database modality columns) beside a bar chart of R@k per pair;
    below them, with headings, recall@1 of each pair by heading gap (the number of queries above each bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qms = list(dict.fromkeys(q for q, _ in report.results))
    dms = list(dict.fromkeys(d for _, d in report.results))
    grid = np.array([[report.results[(q, d)].recalls[1] for d in dms] for q in qms])
    gaps = any(r.by_heading_gap for r in report.results.values())
    if gaps:
        fig = plt.figure(figsize=(12, 8.5))
        spec = fig.add_gridspec(2, 2, width_ratios=[1, 2], height_ratios=[1, 0.85])
        ax1, ax2, ax3 = fig.add_subplot(spec[0, 0]), fig.add_subplot(spec[0, 1]), fig.add_subplot(spec[1, :])
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    im = ax1.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    ax1.set_xticks(range(len(dms)), [d.value for d in dms])
    ax1.set_yticks(range(len(qms)), [q.value for q in qms])
    ax1.set_xlabel("database")
    ax1.set_ylabel("query")
    for i in range(len(qms)):
        for j in range(len(dms)):
            ax1.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=ax1, fraction=0.046)
    ax1.set_title(f"recall@1 ({report.radius_m:g} m)")
    ks = sorted(next(iter(report.results.values())).recalls)
    names = [f"{q.value[:3]}>{d.value[:3]}" for q, d in report.results]
    x = np.arange(len(names))
    w = 0.8 / (len(ks) + 1)
    for i, k in enumerate(ks):
        ax2.bar(x + i * w, [r.recalls[k] for r in report.results.values()], w, label=f"R@{k}")
    ax2.bar(x + len(ks) * w, [r.recall_one_percent for r in report.results.values()], w, label="R@1%")
    ax2.set_xticks(x + w * len(ks) / 2, names, rotation=30)
    ax2.set_ylim(0, 1)
    ax2.legend(ncol=4, fontsize=8)
    ax2.set_title(f"db {Path(report.database).name} / queries {Path(report.queries).name}")
    if gaps:
        w = 0.8 / len(HEADING_GAP_BINS)
        colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(HEADING_GAP_BINS)))
        for i, (b, c) in enumerate(zip(HEADING_GAP_BINS, colours)):
            counts = [r.by_heading_gap.get(b, (0, 0)) for r in report.results.values()]
            ax3.bar(x + i * w, [h / n if n else 0.0 for n, h in counts], w, color=c, label=f"{b} deg")
            for xi, (n, _) in zip(x + i * w, counts):
                ax3.text(xi, 1.01, str(n), ha="center", va="bottom", fontsize=6, rotation=90)
        ax3.set_xticks(x + w * (len(HEADING_GAP_BINS) - 1) / 2, names, rotation=30)
        ax3.set_ylim(0, 1.12)
        ax3.set_ylabel("recall@1")
        ax3.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax3.set_title("recall@1 by heading gap to the nearest-heading positive (queries above each bar)")
    fig.tight_layout()
    fig.savefig(str(png), dpi=110)
    plt.close(fig)


def measure_latency(encoder: OnnxEncoder, batch_sizes: tuple[int, ...] = (1, 8), runs: int = 50, seed: int = 0) -> dict[str, Any]:
    """Median and p90 wall time (ms) of one onnxruntime run per batch size, on seeded random inputs."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"providers": list(encoder.providers), "intra_op_threads": encoder.config.intra_op_threads}
    for b in batch_sizes:
        x = rng.standard_normal((b, *encoder.card.input_shape)).astype(np.float32)
        for _ in range(3):
            encoder._run(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            encoder._run(x)
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        out[f"batch{b}_median"] = round(statistics.median(times), 3)
        out[f"batch{b}_p90"] = round(times[int(0.9 * (len(times) - 1))], 3)
    return out


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
