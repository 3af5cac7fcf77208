"""Benchmark of the scene memory against raw FAISS on the same data in the same run.

For each database size and backend: bulk insert rate, single-entry add latency, single-query search latency
(p50/p99/mean, queries per second) and recall@1 against exact search, measured for the project's ``SceneMemory``
and for a bare FAISS index built with the same parameters on the same vectors. Queries are timed interleaved
(wrapper, raw, wrapper, raw, ...) so that load from other processes on a shared machine hits both alike.

The data are clustered synthetic embeddings: cluster centres on the unit sphere, each cluster spread along a few
random directions (a low intrinsic dimension, as real scene embeddings have) plus small isotropic noise; queries are
fresh draws from the same clusters. Uniform random vectors would be unrealistically hard for any ANN index.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory
from cmr_fusion_ros.core.memory.config import AdmissionConfig, IndexConfig

__all__ = [
    "BACKENDS",
    "BenchRow",
    "DataSpec",
    "backend_config",
    "clustered_vectors",
    "exact_top1",
    "format_table",
    "machine_info",
    "run_benchmark",
]

BACKENDS = ("exact", "faiss_hnsw", "faiss_ivf")


@dataclass(frozen=True)
class DataSpec:
    """Parameters of the clustered synthetic data."""

    points_per_cluster: int = 500
    rank: int = 8
    spread: float = 0.6
    noise: float = 0.08

    def describe(self, n: int) -> str:
        return (
            f"clustered synthetic vectors (NOT uniform random): {max(1, n // self.points_per_cluster)} clusters, "
            f"each a random centre + {self.rank}-d random subspace (spread {self.spread}) + isotropic noise "
            f"{self.noise}, L2-normalised; queries are fresh draws from the same clusters"
        )


def clustered_vectors(n: int, dim: int, *, seed: int = 0, n_queries: int = 0, spec: DataSpec = DataSpec()):
    """``n`` database vectors and ``n_queries`` query vectors (float32, unit rows) from the same clusters.

    Returns (database, queries). Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n // spec.points_per_cluster)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_clusters, n)
    qlabels = rng.integers(0, n_clusters, n_queries)
    db = np.empty((n, dim), np.float32)
    qs = np.empty((n_queries, dim), np.float32)
    order = np.argsort(labels, kind="stable")
    qorder = np.argsort(qlabels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    qbounds = np.searchsorted(qlabels[qorder], np.arange(n_clusters + 1))
    noise = spec.noise / math.sqrt(dim)
    for c in range(n_clusters):
        basis = rng.standard_normal((spec.rank, dim)).astype(np.float32) * (spec.spread / math.sqrt(dim))
        for idx, lo, hi, out in ((order, bounds[c], bounds[c + 1], db), (qorder, qbounds[c], qbounds[c + 1], qs)):
            m = hi - lo
            if m == 0:
                continue
            z = rng.standard_normal((m, spec.rank)).astype(np.float32) * math.sqrt(dim / spec.rank)
            pts = centres[c] + z @ basis + rng.standard_normal((m, dim)).astype(np.float32) * noise
            out[idx[lo:hi]] = pts
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    if n_queries:
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    return db, qs


def exact_top1(db: np.ndarray, queries: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact best inner product per query: (scores, row indices), computed in chunks with numpy."""
    best = np.full(queries.shape[0], -np.inf, np.float32)
    arg = np.zeros(queries.shape[0], np.int64)
    for lo in range(0, db.shape[0], chunk):
        s = queries @ db[lo : lo + chunk].T
        j = np.argmax(s, axis=1)
        v = s[np.arange(s.shape[0]), j]
        better = v > best
        best[better] = v[better]
        arg[better] = j[better] + lo
    return best, arg


def backend_config(backend: str, n: int, dim: int, chunk: int) -> MemoryConfig:
    """The memory configuration the benchmark uses for a backend at a database size (IVF's nlist grows with n)."""
    nlist = 256 if n <= 20_000 else 1024 if n <= 200_000 else 2048
    train = min(n, max(chunk, int(math.ceil(40 * nlist / chunk)) * chunk))
    index = IndexConfig(
        backend=backend,
        hnsw_m=32,
        hnsw_ef_construction=80,
        hnsw_ef_search=64,
        ivf_nlist=nlist,
        ivf_nprobe=16 if n <= 200_000 else 32,
        ivf_train_size=train,
    )
    return MemoryConfig(dim=dim, index=index, admission=AdmissionConfig(enabled=False))


def _raw_index(cfg: MemoryConfig, db: np.ndarray, chunk: int):
    """The same index in bare FAISS, filled the same way; returns (index, seconds)."""
    import faiss

    ic = cfg.index
    d = cfg.dim
    t0 = time.perf_counter()
    if ic.backend == "faiss_hnsw":
        index = faiss.IndexHNSWFlat(d, ic.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ic.hnsw_ef_construction
        index.hnsw.efSearch = ic.hnsw_ef_search
    elif ic.backend == "faiss_ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, ic.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = ic.ivf_nprobe
    else:  # exact: the FAISS exact index is the fair bare counterpart of numpy brute force
        index = faiss.IndexFlatIP(d)
    for lo in range(0, db.shape[0], chunk):
        part = db[lo : lo + chunk]
        if ic.backend == "faiss_ivf" and not index.is_trained:
            if lo + part.shape[0] < ic.effective_train_size:
                continue
            index.train(db[: lo + part.shape[0]])
            index.add(db[: lo + part.shape[0]])
            continue
        index.add(part)
    return index, time.perf_counter() - t0


@dataclass
class BenchRow:
    size: int
    backend: str
    params: dict
    insert_s: dict = field(default_factory=dict)  # bulk insert seconds: wrapper, raw
    insert_rate: dict = field(default_factory=dict)  # vectors/s
    add_one_us: dict = field(default_factory=dict)  # mean single-entry add, microseconds
    query_ms: dict = field(default_factory=dict)  # {"wrapper": {"p50","p99","mean"}, "raw": {...}}
    qps: dict = field(default_factory=dict)
    recall_at_1: dict = field(default_factory=dict)
    n_queries: int = 0
    throughput_ratio: float = 0.0  # wrapper search() qps / raw qps
    throughput_ratio_ids: float = 0.0  # wrapper search_ids() qps / raw qps
    search_ids_agrees: float = 0.0  # fraction of queries where search_ids returned the ids search returned

    def to_dict(self) -> dict:
        return asdict(self)


def _stats_ms(times: np.ndarray) -> dict:
    return {
        "p50": float(np.percentile(times, 50) * 1e3),
        "p99": float(np.percentile(times, 99) * 1e3),
        "mean": float(times.mean() * 1e3),
    }


def run_benchmark(
    sizes: Iterable[int],
    dim: int = 256,
    backends: Iterable[str] = BACKENDS,
    n_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
    chunk: int = 10_000,
    n_single_adds: int = 500,
    exact_query_budget_s: float = 20.0,
    progress: Callable[[str], None] | None = None,
    on_row: Callable[[BenchRow], None] | None = None,
) -> tuple[list[BenchRow], dict]:
    """Run the benchmark; returns (rows, info about the data)."""
    import faiss

    say = progress or (lambda msg: None)
    rows: list[BenchRow] = []
    info: dict = {"data": {}}
    for n in sizes:
        say(f"n={n}: generating data")
        db, queries = clustered_vectors(n + n_single_adds, dim, seed=seed, n_queries=n_queries)
        extra, db = db[n:], db[:n]
        info["data"][n] = DataSpec().describe(n)
        say(f"n={n}: exact ground truth")
        gt_score, _ = exact_top1(db, queries)
        for backend in backends:
            cfg = backend_config(backend, n, dim, chunk)
            if backend == "faiss_hnsw":
                params = {"M": cfg.index.hnsw_m, "efConstruction": cfg.index.hnsw_ef_construction,
                          "efSearch": cfg.index.hnsw_ef_search}
            elif backend == "faiss_ivf":
                params = {"nlist": cfg.index.ivf_nlist, "nprobe": cfg.index.ivf_nprobe,
                          "train_size": cfg.index.effective_train_size}
            elif backend == "exact":
                params = {"wrapper": "numpy brute force", "raw": "faiss IndexFlatIP"}
            else:
                params = {"wrapper": "faiss IndexFlatIP", "raw": "faiss IndexFlatIP"}
            row = BenchRow(size=n, backend=backend, params=params)
            # -- insert: wrapper
            say(f"n={n} {backend}: wrapper insert")
            mem = SceneMemory(cfg)
            stamps = np.arange(n, dtype=np.int64) * 100_000_000
            t0 = time.perf_counter()
            for lo in range(0, n, chunk):
                mem.add_batch(db[lo : lo + chunk], "camera", "bench", "cam", stamps[lo : lo + chunk])
            t_wrapper = time.perf_counter() - t0
            # -- insert: raw
            say(f"n={n} {backend}: raw FAISS insert")
            raw, t_raw = _raw_index(cfg, db, chunk)
            row.insert_s = {"wrapper": t_wrapper, "raw": t_raw}
            row.insert_rate = {"wrapper": n / t_wrapper, "raw": n / t_raw}
            # -- queries, interleaved
            nq = n_queries
            if backend == "exact":
                t1 = time.perf_counter()
                mem.search(queries[0], k)
                per = time.perf_counter() - t1
                nq = int(max(20, min(n_queries, exact_query_budget_s / max(per, 1e-6) / 2)))
            say(f"n={n} {backend}: {nq} queries")
            tw = np.empty(nq)
            ti = np.empty(nq)
            tr = np.empty(nq)
            top_w = np.empty(nq, np.float32)
            top_r = np.empty(nq, np.float32)
            same_ids = 0
            for i in range(nq):
                q = queries[i]
                qq = q[None, :]
                # the first search of a query warms the caches for the next two: rotate who goes first
                for which in ((0, 1, 2), (1, 2, 0), (2, 0, 1))[i % 3]:
                    t1 = time.perf_counter()
                    if which == 0:
                        res = mem.search(q, k)
                        ids_w = [nb.entry.id for nb in res]  # a consumer reads the entries
                        t2 = time.perf_counter()
                        tw[i] = t2 - t1
                    elif which == 1:
                        ids, _ = mem.search_ids(q, k)
                        t2 = time.perf_counter()
                        ti[i] = t2 - t1
                    else:
                        scores, labels = raw.search(qq, k)
                        t2 = time.perf_counter()
                        tr[i] = t2 - t1
                top_w[i] = res[0].score if res else -np.inf
                top_r[i] = scores[0, 0]
                same_ids += ids.tolist() == ids_w
            gt = gt_score[:nq]
            row.n_queries = nq
            row.query_ms = {"wrapper": _stats_ms(tw), "wrapper_ids": _stats_ms(ti), "raw": _stats_ms(tr)}
            row.qps = {"wrapper": nq / tw.sum(), "wrapper_ids": nq / ti.sum(), "raw": nq / tr.sum()}
            row.throughput_ratio = row.qps["wrapper"] / row.qps["raw"]
            row.throughput_ratio_ids = row.qps["wrapper_ids"] / row.qps["raw"]
            row.recall_at_1 = {
                "wrapper": float(np.mean(top_w >= gt - 1e-5)),
                "raw": float(np.mean(top_r >= gt - 1e-5)),
            }
            row.search_ids_agrees = same_ids / nq
            # -- single-entry adds into the full index (the per-frame cost)
            say(f"n={n} {backend}: {n_single_adds} single adds")
            t1 = time.perf_counter()
            for j in range(n_single_adds):
                mem.add(extra[j], "camera", "bench", "cam", int(n + j) * 100_000_000)
            t_one_w = (time.perf_counter() - t1) / max(n_single_adds, 1)
            t1 = time.perf_counter()
            for j in range(n_single_adds):
                raw.add(extra[j : j + 1])
            t_one_r = (time.perf_counter() - t1) / max(n_single_adds, 1)
            row.add_one_us = {"wrapper": t_one_w * 1e6, "raw": t_one_r * 1e6}
            rows.append(row)
            if on_row is not None:
                on_row(row)
            del mem, raw
            gc.collect()
        del db, queries
        gc.collect()
    info["faiss_threads"] = faiss.omp_get_max_threads()
    info["k"] = k
    return rows, info


def machine_info() -> dict:
    """CPU model, cores, RAM, load, library versions."""
    import faiss

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gib = float("nan")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    ram_gib = int(line.split()[1]) / 2**20
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_gib, 1),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
    }


def format_table(rows: list[BenchRow], header: bool = True) -> str:
    """A plain-text table: one line per (size, backend), wrapper and raw FAISS side by side."""
    head = (
        f"{'size':>9} {'backend':<10} {'insert/s wrap':>13} {'insert/s raw':>12} {'add1 us w/r':>13} "
        f"{'q p50 ms w/ids/raw':>20} {'q p99 ms w/ids/raw':>20} {'QPS w/ids/raw':>17} {'ratio w,ids':>11} "
        f"{'R@1 w/raw':>11} {'nq':>5}"
    )
    lines = [head, "-" * len(head)] if header else []
    for r in rows:
        qm = r.query_ms
        lines.append(
            f"{r.size:>9} {r.backend:<10} {r.insert_rate['wrapper']:>13.0f} {r.insert_rate['raw']:>12.0f} "
            f"{r.add_one_us['wrapper']:>6.0f}/{r.add_one_us['raw']:<6.0f} "
            f"{qm['wrapper']['p50']:>6.3f}/{qm['wrapper_ids']['p50']:.3f}/{qm['raw']['p50']:<6.3f} "
            f"{qm['wrapper']['p99']:>6.3f}/{qm['wrapper_ids']['p99']:.3f}/{qm['raw']['p99']:<6.3f} "
            f"{r.qps['wrapper']:>5.0f}/{r.qps['wrapper_ids']:.0f}/{r.qps['raw']:<5.0f} "
            f"{r.throughput_ratio:>5.2f},{r.throughput_ratio_ids:<5.2f} "
            f"{r.recall_at_1['wrapper']:>5.3f}/{r.recall_at_1['raw']:<5.3f} {r.n_queries:>5}"
        )
    return "\n".join(lines)
