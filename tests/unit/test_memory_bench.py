"""The memory benchmark harness and `cmr-fusion bench memory` on a tiny run (figures checked for sanity, never
for speed), and the core's import hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cmr_fusion_ros.cli import main
from cmr_fusion_ros.eval import bench_memory as bm

ROOT = Path(__file__).resolve().parents[2]


def test_clustered_vectors_are_deterministic_unit_and_clustered():
    a, qa = bm.clustered_vectors(3000, 64, seed=3, n_queries=50)
    b, qb = bm.clustered_vectors(3000, 64, seed=3, n_queries=50)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(qa, qb)
    assert a.dtype == np.float32 and a.shape == (3000, 64) and qa.shape == (50, 64)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # clustered: a query's best match is far more similar than a random pair
    best, _ = bm.exact_top1(a, qa)
    rng = np.random.default_rng(0)
    random_pairs = np.einsum("ij,ij->i", a[rng.integers(0, 3000, 500)], a[rng.integers(0, 3000, 500)])
    assert best.mean() > 0.8 and abs(random_pairs.mean()) < 0.2


def test_exact_top1_matches_brute_force():
    db, q = bm.clustered_vectors(1000, 16, seed=1, n_queries=30)
    scores, idx = bm.exact_top1(db, q, chunk=97)
    full = q @ db.T
    np.testing.assert_array_equal(idx, full.argmax(axis=1))
    np.testing.assert_allclose(scores, full.max(axis=1), rtol=1e-6)


def test_run_benchmark_tiny():
    rows, info = bm.run_benchmark([2000], dim=32, backends=["exact", "faiss_hnsw", "faiss_ivf"], n_queries=30,
                                  k=5, chunk=1000, n_single_adds=5)
    assert [r.backend for r in rows] == ["exact", "faiss_hnsw", "faiss_ivf"]
    for r in rows:
        assert r.size == 2000 and r.n_queries == 30
        assert set(r.qps) == {"wrapper", "wrapper_ids", "raw"} and all(v > 0 for v in r.qps.values())
        assert 0.0 <= r.recall_at_1["wrapper"] <= 1.0 and 0.0 <= r.recall_at_1["raw"] <= 1.0
        assert r.search_ids_agrees == 1.0
    assert rows[0].recall_at_1 == {"wrapper": 1.0, "raw": 1.0}  # exact is exact
    assert "NOT uniform random" in info["data"][2000]
    table = bm.format_table(rows)
    assert table.count("\n") == 4 and "faiss_ivf" in table


def test_cli_bench_memory_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    rc = main(["bench", "memory", "--sizes", "1500", "--dim", "16", "--backends", "exact", "faiss_hnsw",
               "--queries", "20", "--single-adds", "5", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("command: cmr-fusion bench memory --sizes 1500 --dim 16")
    assert "machine:" in text and "clustered synthetic" in text and "target n=1500 faiss_hnsw" in text
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] == os.cpu_count() and len(data["rows"]) == 2
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_core_memory_and_policy_import_neither_ros_nor_faiss():
    code = (
        "import sys, numpy as np\n"
        "import cmr_fusion_ros.core.memory as m, cmr_fusion_ros.core.policy\n"
        "mem = m.SceneMemory(m.MemoryConfig(dim=4)); mem.add(np.ones(4), 'camera', '/c', 'f', 1)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('rclpy', 'faiss') or n.endswith('_msgs')]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
