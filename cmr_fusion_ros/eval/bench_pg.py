"""Benchmark of the PostgreSQL + pgvector scene memory (``cmr-fusion bench memory --backends postgres``).

On the same clustered synthetic data as the FAISS rows (:func:`bench_memory.clustered_vectors`), for each size:
bulk load (the memory's own writer: binary COPY batches, no index yet), HNSW index build, single-query latency of
``PostgresMemory.search`` with a modality filter over the local socket (p50/p99), recall@1 against exact search on
the same filtered rows, then the sustained insert rate into the indexed table (entries acknowledged per second) and
the query latency while a writer inserts at a fixed rate (the fleet target: thirty robots at thirty entries a second).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cmr_fusion_ros.core.memory import MemoryConfig
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.bench_memory import clustered_vectors, exact_top1

__all__ = ["PgRow", "format_pg_table", "run_pg_benchmark"]

_S = 1_000_000_000


@dataclass
class PgRow:
    size: int
    params: str
    load_s: float
    load_per_s: float
    index_build_s: float
    query_ms: dict[str, float] = field(default_factory=dict)
    recall_at_1: float = 0.0
    insert_per_s: float = 0.0
    loaded_query_ms: dict[str, float] = field(default_factory=dict)
    loaded_insert_per_s: float = 0.0
    loaded_target_per_s: float = 0.0
    table_mib: float = 0.0
    index_mib: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "n": int(a.size)}


def _config(uri: str, dim: int, m: int, efc: int, efs: int, batch: int, backend: str = "faiss_hnsw") -> MemoryConfig:
    return MemoryConfig.from_dict({
        "dim": dim, "store": "postgres", "robot_id": "bench", "admission": {"enabled": False},
        "index": {"backend": backend, "hnsw_m": m, "hnsw_ef_construction": efc, "hnsw_ef_search": efs},
        "postgres": {"uri": uri, "batch_size": batch, "write_queue": 10_000_000, "statement_timeout_ms": 0},
    })


def run_pg_benchmark(sizes, *, dim: int = 256, n_queries: int = 300, k: int = 10, seed: int = 0,
                     m: int = 16, ef_construction: int = 64, ef_search: int = 64, insert_rate: float = 1000.0,
                     insert_seconds: float = 10.0, uri: str = "", progress=None, on_row=None) -> list[PgRow]:
    """One row per size. Without ``uri`` an embedded server is started in a temporary folder (removed after)."""
    import psycopg

    from cmr_fusion_ros.core.memory.embedded import start_server
    from cmr_fusion_ros.core.memory.postgres import PostgresMemory, ensure_hnsw_index, hnsw_index_name

    say = progress or (lambda _s: None)
    tmp = None
    server = None
    if not uri:
        tmp = Path(tempfile.mkdtemp(prefix="cmr_bench_pg_"))
        server = start_server(tmp / "data")
        uri = server.uri
    rows = []
    try:
        for size in sizes:
            db, qs = clustered_vectors(size, dim, seed=seed, n_queries=n_queries)
            mods = np.arange(size) % 3  # three modalities, interleaved; queries filter on one
            with psycopg.connect(uri, autocommit=True) as admin:
                admin.execute("DROP TABLE IF EXISTS cmr_entries, cmr_schema CASCADE")
                admin.execute("DROP SEQUENCE IF EXISTS cmr_writer_seq")
            cfg = _config(uri, dim, m, ef_construction, ef_search, batch=5000)
            mem = PostgresMemory(_config(uri, dim, m, ef_construction, ef_search, 5000, "exact"))  # no index yet
            say(f"postgres n={size}: load")
            t0 = time.perf_counter()
            for c, mod in enumerate(Modality):
                sel = np.flatnonzero(mods == c)
                mem.add_batch(db[sel], mod, f"/{mod.value}", mod.value, sel.astype(np.int64) * _S)
            mem.flush(timeout_s=3600)
            load_s = time.perf_counter() - t0
            mem.close()
            say(f"postgres n={size}: HNSW build")
            t0 = time.perf_counter()
            with psycopg.connect(uri, autocommit=True) as admin:
                admin.execute("SET maintenance_work_mem = '2GB'")
                ensure_hnsw_index(admin, m, ef_construction)
            build_s = time.perf_counter() - t0
            mem = PostgresMemory(cfg)
            say(f"postgres n={size}: queries")
            lat, hits = [], 0
            for i, q in enumerate(qs):
                mod = Modality(list(Modality)[i % 3])
                t0 = time.perf_counter()
                found = mem.search(q, k, modalities=[mod])
                lat.append((time.perf_counter() - t0) * 1e3)
                sel = np.flatnonzero(mods == i % 3)
                best, arg = exact_top1(db[sel], q[None])
                hits += bool(found) and abs(found[0].score - float(best[0])) < 1e-4
            say(f"postgres n={size}: sustained inserts")
            extra, _ = clustered_vectors(int(insert_rate * insert_seconds) + 5000, dim, seed=seed + 1)
            n_ins = min(5000, extra.shape[0])
            t0 = time.perf_counter()
            mem.add_batch(extra[:n_ins], Modality.CAMERA, "/camera", "camera",
                          np.arange(n_ins, dtype=np.int64) * _S + size * _S)
            mem.flush(timeout_s=3600)
            insert_per_s = n_ins / (time.perf_counter() - t0)
            loaded_lat, written = _queries_while_inserting(mem, qs, extra[n_ins:], k, insert_rate, insert_seconds,
                                                            size + n_ins)
            with psycopg.connect(uri) as admin:
                table_b = admin.execute("SELECT pg_table_size('cmr_entries')").fetchone()[0]
                index_b = sum(admin.execute("SELECT pg_relation_size(%s)", (hnsw_index_name(m, ef_construction, mod),))
                              .fetchone()[0] for mod in Modality)
            mem.close()
            row = PgRow(size, f"m={m} ef_construction={ef_construction} ef_search={ef_search}", load_s,
                        size / load_s, build_s, _pct(lat), hits / len(qs), insert_per_s, _pct(loaded_lat),
                        written, insert_rate, table_b / 2**20, index_b / 2**20)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _queries_while_inserting(mem, qs, vecs, k, rate, seconds, stamp0):
    """Queries back to back while a thread adds ``rate`` entries a second (in 10 ms steps) for ``seconds``; returns
    the query latencies and the entries per second the database acknowledged."""
    stop = threading.Event()
    written0 = mem.pg_stats().written

    def feed():
        i, t_start = 0, time.perf_counter()
        while not stop.is_set() and i < vecs.shape[0]:
            due = int((time.perf_counter() - t_start) * rate)
            if due > i:
                j = min(due, vecs.shape[0])
                mem.add_batch(vecs[i:j], Modality.LIDAR, "/lidar", "lidar",
                              np.arange(i, j, dtype=np.int64) * _S + stamp0 * _S)
                i = j
            time.sleep(0.01)

    t = threading.Thread(target=feed, daemon=True)
    t0 = time.perf_counter()
    t.start()
    lat = []
    while time.perf_counter() - t0 < seconds:
        q = qs[len(lat) % len(qs)]
        t1 = time.perf_counter()
        mem.search(q, k, modalities=[Modality.CAMERA])
        lat.append((time.perf_counter() - t1) * 1e3)
    stop.set()
    t.join()
    elapsed = time.perf_counter() - t0
    written = (mem.pg_stats().written - written0) / elapsed
    return lat, written


def format_pg_table(rows: list[PgRow], header: bool = True) -> str:
    out = []
    if header:
        out.append(f"{'size':>9} {'params':<38} {'load/s':>8} {'build s':>8} {'q p50':>7} {'q p99':>7} {'R@1':>6} "
                   f"{'ins/s':>7} {'ins/s@load':>10} {'q p99@load':>10} {'table MiB':>9} {'index MiB':>9}")
    for r in rows:
        out.append(f"{r.size:>9} {r.params:<38} {r.load_per_s:>8.0f} {r.index_build_s:>8.1f} "
                   f"{r.query_ms['p50']:>7.2f} {r.query_ms['p99']:>7.2f} {r.recall_at_1:>6.3f} {r.insert_per_s:>7.0f} "
                   f"{r.loaded_insert_per_s:>10.0f} {r.loaded_query_ms['p99']:>10.2f} {r.table_mib:>9.0f} "
                   f"{r.index_mib:>9.0f}")
    return "\n".join(out)
