"""Measure how long opening a persisted HNSW memory takes with the saved FAISS index vs rebuilding it.

Not a test (timings never decide a test); run by hand:
    PYTHONPATH=. .venv/bin/python tests/unit/memory_load_time.py [N] [DIRECTORY]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np

from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory
from cmr_fusion_ros.eval.bench_memory import clustered_vectors


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    d = sys.argv[2] if len(sys.argv) > 2 else f"/tmp/cmr_memory_load_time_{os.getpid()}"
    cfg = MemoryConfig.from_dict({"index": {"backend": "faiss_hnsw"}, "admission": {"enabled": False}})
    print(f"command: {' '.join(sys.argv)}  (n={n}, dim 256, HNSW M={cfg.index.hnsw_m} "
          f"efConstruction={cfg.index.hnsw_ef_construction}, clustered synthetic data)")
    db, _ = clustered_vectors(n, 256, seed=0)
    shutil.rmtree(d, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        with SceneMemory.open(d, cfg) as mem:
            mem.add_batch(db, "lidar", "/points", "lidar", np.arange(n))
        print(f"build + journal + snapshot + close: {time.perf_counter() - t0:.1f} s")
        with SceneMemory.open(d, cfg, read_only=True) as mem:
            s = mem.stats()
            print(f"open with the saved index: {s.load_seconds:.2f} s (index_loaded={s.index_loaded})")
        manifest = json.loads(open(os.path.join(d, "MANIFEST.json")).read())
        print({f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))})
        os.remove(os.path.join(d, manifest["index"]))
        with SceneMemory.open(d, cfg, read_only=True) as mem:
            s = mem.stats()
            print(f"open rebuilding the index: {s.load_seconds:.2f} s (index_loaded={s.index_loaded})")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
