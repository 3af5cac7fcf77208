"""SceneMemory search against a brute-force reference, filters with approximate indexes, admission, capacity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import ConfigError, MemoryStoreError
from cmr_fusion_ros.core.memory import MemoryConfig, RejectReason, SceneMemory
from cmr_fusion_ros.core.types import Modality, Pose
from cmr_fusion_ros.eval.bench_memory import clustered_vectors

DIM = 32
MODS = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)


def make_config(backend: str = "exact", **over) -> MemoryConfig:
    d = {
        "dim": DIM,
        "index": {"backend": backend, "hnsw_m": 16, "hnsw_ef_search": 32, "ivf_nlist": 16, "ivf_nprobe": 4,
                  "filter_exact_below": 0},
        "admission": {"enabled": False},
    }
    for key, value in over.items():
        d.setdefault(key, {}).update(value) if isinstance(value, dict) else d.__setitem__(key, value)
    return MemoryConfig.from_dict(d)


def fill(mem: SceneMemory, n: int, seed: int = 0):
    """n entries: modality cycling camera/lidar/radar, stamp = 1e9 * i, session s0 for the first half, s1 after."""
    db, queries = clustered_vectors(n, DIM, seed=seed, n_queries=40)
    for i in range(n):
        mem.add(db[i], MODS[i % 3], f"/{MODS[i % 3].value}", f"{MODS[i % 3].value}_frame", i * 10**9,
                Pose(float(i), 0.0, 0.0) if i % 2 else None, "s0" if i < n // 2 else "s1")
    return db, queries


def reference(db, q, k, ok=None):
    """Brute-force top-k over rows where ok is True: list of (id, score), ids = row + 1."""
    s = db @ (q / np.linalg.norm(q))
    rows = [i for i in range(db.shape[0]) if ok is None or ok(i)]
    rows.sort(key=lambda i: (-s[i], i))
    return [(i + 1, float(s[i])) for i in rows[:k]]


@pytest.mark.parametrize("k", [1, 5, 50])
def test_exact_backend_equals_brute_force(k):
    mem = SceneMemory(make_config("exact"))
    db, queries = fill(mem, 300)
    for q in queries[:20]:
        got = [(n.entry.id, n.score) for n in mem.search(q, k)]
        want = reference(db, q, k)
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-5)
        assert [n.rank for n in mem.search(q, k)] == list(range(k))


def test_faiss_flat_equals_exact_allowing_ties():
    exact = SceneMemory(make_config("exact"))
    flat = SceneMemory(make_config("faiss_flat"))
    db, queries = fill(exact, 400)
    fill(flat, 400)
    for q in queries:
        a = exact.search(q, 10)
        b = flat.search(q, 10)
        np.testing.assert_allclose([n.score for n in a], [n.score for n in b], atol=1e-5)
        for na, nb in zip(a, b):
            if na.entry.id != nb.entry.id:  # only a tie may reorder
                assert abs(na.score - nb.score) < 1e-5
    # exact duplicates of a vector are ties: both backends return both copies first
    dup = SceneMemory(make_config("faiss_flat"))
    dup.add(db[0], "camera", "/a", "f", 1)
    dup.add(db[0], "camera", "/a", "f", 2)
    dup.add(db[1], "camera", "/a", "f", 3)
    assert {n.entry.id for n in dup.search(db[0], 2)} == {1, 2}


FILTERS = [
    dict(modalities=["lidar"]),
    dict(modalities=[Modality.CAMERA, "radar"]),
    dict(exclude_newer_than_ns=50 * 10**9),
    dict(exclude_session="s1"),
    dict(modalities="radar", exclude_newer_than_ns=30 * 10**9, exclude_session="s1"),  # 11 of 1200 pass
    dict(modalities=["camera"], exclude_newer_than_ns=-1),  # nothing passes
]


def passes(entry, f):
    mods = f.get("modalities")
    if mods is not None:
        mods = {Modality(mods)} if isinstance(mods, str) else {Modality(m) for m in mods}
        if entry.modality not in mods:
            return False
    if f.get("exclude_newer_than_ns") is not None and entry.stamp_ns > f["exclude_newer_than_ns"]:
        return False
    if f.get("exclude_session") is not None and entry.session == f["exclude_session"]:
        return False
    return True


@pytest.mark.parametrize("backend", ["exact", "faiss_flat", "faiss_hnsw", "faiss_ivf"])
@pytest.mark.parametrize("fi", range(len(FILTERS)))
def test_filters_are_honoured_and_lists_not_short(backend, fi):
    f = FILTERS[fi]
    n = 1200
    mem = SceneMemory(make_config(backend))
    db, queries = fill(mem, n)
    assert mem.stats().index_ready
    meta = {e: mem.get(e) for e in range(1, n + 1)}
    eligible = [e for e in meta if passes(meta[e], f)]
    k = 20
    hits = 0
    for q in queries[:15]:
        res = mem.search(q, k, **f)
        assert len(res) == min(k, len(eligible)), "approximate search must not return a short list"
        assert all(passes(nb.entry, f) for nb in res)
        assert len({nb.entry.id for nb in res}) == len(res)
        assert all(a.score >= b.score - 1e-6 for a, b in zip(res, res[1:]))
        want = reference(db, q, 1, lambda i: passes(meta[i + 1], f))
        if res and want:
            hits += res[0].entry.id == want[0][0] or abs(res[0].score - want[0][1]) < 1e-5
    if eligible:
        assert hits >= 13  # approximate, but the filtered top-1 is almost always right on clustered data


def test_min_score_cuts_the_list():
    mem = SceneMemory(make_config("exact"))
    db, queries = fill(mem, 200)
    res = mem.search(db[10], 50, min_score=0.9)
    assert res and res[0].entry.id == 11 and math.isclose(res[0].score, 1.0, abs_tol=1e-5)
    assert all(nb.score >= 0.9 for nb in res)
    full = mem.search(db[10], 200)
    assert len(res) == sum(nb.score >= 0.9 for nb in full)


def test_entry_metadata_and_vector():
    mem = SceneMemory(make_config("exact"))
    e = mem.add(np.arange(1, DIM + 1, dtype=np.float64), "lidar", "/points", "velodyne", 1234, Pose(1, 2, 3), "bagA")
    assert e.id == 1 and e.modality is Modality.LIDAR and e.topic == "/points" and e.frame_id == "velodyne"
    assert e.stamp_ns == 1234 and e.pose == Pose(1, 2, 3) and e.session == "bagA"
    assert e.vector.dtype == np.float32 and math.isclose(float(np.linalg.norm(e.vector)), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError):
        e.vector[0] = 5.0  # read-only
    assert mem.get(1) == e and mem.get(2) is None
    assert mem.search(np.arange(1, DIM + 1), 1)[0].entry == e


@pytest.mark.parametrize(
    ("vector", "match"),
    [
        (np.zeros(DIM), "zero length"),
        (np.full(DIM, np.nan), "NaN"),
        (np.r_[np.ones(DIM - 1), np.inf], "NaN or infinite"),
        (np.ones(DIM + 1), "expected shape"),
        (np.ones((2, DIM)), "expected one vector"),
        ("abc", "not a numeric array"),
    ],
)
def test_bad_vectors_are_rejected(vector, match):
    mem = SceneMemory(make_config("exact"))
    with pytest.raises(MemoryStoreError, match=match):
        mem.add(vector, "camera", "/c", "f", 0)
    with pytest.raises(MemoryStoreError, match=match):
        mem.search(vector, 1)
    assert len(mem) == 0


def test_bad_arguments():
    mem = SceneMemory(make_config("exact"))
    with pytest.raises(ConfigError, match="modality"):
        mem.add(np.ones(DIM), "sonar", "/c", "f", 0)
    with pytest.raises(MemoryStoreError, match="stamp_ns"):
        mem.add(np.ones(DIM), "camera", "/c", "f", 1.5)
    with pytest.raises(MemoryStoreError, match="k must be"):
        mem.search(np.ones(DIM), 0)
    assert mem.search(np.ones(DIM), 3) == []


def test_admission_skips_near_duplicates_until_moved():
    cfg = make_config("exact", admission={"enabled": True, "duplicate_cosine": 0.95, "duplicate_distance_m": 1.0})
    mem = SceneMemory(cfg)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(DIM)
    assert mem.add(v, "camera", "/front", "f", 1, Pose(0, 0, 0)) is not None
    # same view, barely moved: skipped, with a reason
    assert mem.add(v + 0.01 * rng.standard_normal(DIM), "camera", "/front", "f", 2, Pose(0.5, 0, 0)) is None
    assert mem.last_rejection.reason is RejectReason.DUPLICATE and "cosine" in mem.last_rejection.detail
    # pose unknown: the cosine test alone decides
    assert mem.add(v, "camera", "/front", "f", 3, None) is None
    # moved far enough: kept even though it looks the same
    assert mem.add(v, "camera", "/front", "f", 4, Pose(2, 0, 0)) is not None
    assert mem.last_rejection is None
    # another topic or modality is compared with its own last entry
    assert mem.add(v, "camera", "/rear", "f", 5, Pose(2, 0, 0)) is not None
    assert mem.add(v, "lidar", "/front", "f", 6, Pose(2, 0, 0)) is not None
    # a different view at the same place is kept
    assert mem.add(rng.standard_normal(DIM), "camera", "/front", "f", 7, Pose(2, 0, 0)) is not None
    s = mem.stats()
    assert (s.entries, s.skipped_duplicate, s.added) == (5, 2, 5)


@pytest.mark.parametrize("backend", ["exact", "faiss_hnsw"])
def test_capacity_oldest_eviction(backend):
    mem = SceneMemory(make_config(backend, capacity={"max_entries": 50, "eviction": "oldest"}))
    db, queries = fill(mem, 200)
    assert len(mem) == 50
    assert mem.ids().tolist() == list(range(151, 201))
    s = mem.stats()
    assert s.evicted == 150 and s.compactions >= 1 and s.tombstones <= 0.25 * s.slots
    for q in queries[:10]:
        res = mem.search(q, 10)
        assert len(res) == 10 and all(nb.entry.id > 150 for nb in res)
    want = reference(db[150:], queries[0], 1)[0]
    assert mem.search(queries[0], 1)[0].entry.id == want[0] + 150 or backend == "faiss_hnsw"


def test_capacity_oldest_same_modality_and_reject():
    mem = SceneMemory(make_config("exact", capacity={"max_entries": 6, "eviction": "oldest_same_modality"}))
    rng = np.random.default_rng(2)
    for i, mod in enumerate(["camera", "camera", "camera", "camera", "lidar", "radar"]):
        mem.add(rng.standard_normal(DIM), mod, "/t", "f", i)
    assert mem.add(rng.standard_normal(DIM), "radar", "/t", "f", 9) is not None
    assert mem.ids().tolist() == [1, 2, 3, 4, 5, 7]  # the oldest radar (6) went, not the oldest overall (1)
    assert mem.add(rng.standard_normal(DIM), "camera", "/t", "f", 10) is not None
    assert mem.ids().tolist() == [2, 3, 4, 5, 7, 8]
    rej = SceneMemory(make_config("exact", capacity={"max_entries": 3, "eviction": "reject"}))
    for i in range(3):
        assert rej.add(rng.standard_normal(DIM), "camera", "/t", "f", i) is not None
    assert rej.add(rng.standard_normal(DIM), "camera", "/t", "f", 3) is None
    assert rej.last_rejection.reason is RejectReason.CAPACITY
    assert rej.ids().tolist() == [1, 2, 3] and rej.stats().skipped_capacity == 1


@pytest.mark.parametrize("backend", ["exact", "faiss_hnsw", "faiss_ivf"])
def test_clear_by_modality_and_ids_never_reused(backend):
    mem = SceneMemory(make_config(backend))
    db, queries = fill(mem, 900)
    assert mem.clear(["lidar"]) == 300
    assert len(mem) == 600 and mem.stats().entries_by_modality == {"camera": 300, "lidar": 0, "radar": 300}
    assert all(nb.entry.modality is not Modality.LIDAR for q in queries[:5] for nb in mem.search(q, 30))
    assert mem.search(queries[0], 5, modalities=["lidar"]) == []
    assert mem.clear() == 600 and len(mem) == 0 and mem.search(queries[0], 5) == []
    e = mem.add(db[0], "camera", "/c", "f", 0)
    assert e.id == 901 and mem.search(db[0], 5)[0].entry.id == 901


def test_add_batch_matches_single_adds():
    a = SceneMemory(make_config("exact"))
    b = SceneMemory(make_config("exact"))
    db, queries = clustered_vectors(100, DIM, seed=3, n_queries=5)
    ids = a.add_batch(db, "radar", "/r", "radar_link", np.arange(100) * 7, session="x")
    for i in range(100):
        b.add(db[i], "radar", "/r", "radar_link", i * 7, None, "x")
    assert ids.tolist() == list(range(1, 101))
    for q in queries:
        assert [(n.entry, round(n.score, 5)) for n in a.search(q, 7)] == [
            (n.entry, round(n.score, 5)) for n in b.search(q, 7)]
    with pytest.raises(MemoryStoreError, match="stamps"):
        a.add_batch(db, "radar", "/r", "f", [1, 2])


def test_ivf_searches_exactly_before_training():
    mem = SceneMemory(make_config("faiss_ivf", index={"ivf_nlist": 16, "ivf_train_size": 500}))
    db, queries = fill(mem, 300)
    assert not mem.stats().index_ready
    assert [n.entry.id for n in mem.search(queries[0], 5)] == [i for i, _ in reference(db, queries[0], 5)]
    fill(mem, 300, seed=9)
    assert mem.stats().index_ready and len(mem) == 600


def test_approximate_search_that_runs_dry_is_retried_then_answered_exactly(monkeypatch):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(DIM)
    b = -a + 0.1 * rng.standard_normal(DIM)
    mem = SceneMemory(make_config("faiss_ivf", index={"ivf_nlist": 16, "ivf_nprobe": 1, "ivf_train_size": 400}))
    for i in range(400):  # camera entries around a, lidar entries around b (far from a)
        centre, mod = (a, "camera") if i % 4 else (b, "lidar")
        mem.add(centre + 0.5 * rng.standard_normal(DIM), mod, "/t", "f", i)
    assert mem.stats().index_ready
    res = mem.search(a, 20, modalities=["lidar"])
    assert len(res) == 20 and all(nb.entry.modality is Modality.LIDAR for nb in res)
    assert mem.stats().search_retries >= 1
    exact = SceneMemory(make_config("exact"))
    for i in range(1, 401):
        e = mem.get(i)
        exact.add(e.vector, e.modality, "/t", "f", e.stamp_ns)
    want = [n.entry.id for n in exact.search(a, 20, modalities=["lidar"])]
    assert [n.entry.id for n in res][:5] == want[:5]

    # an index that returns nothing at all: the memory falls back to exact search over the filtered subset
    def dry(query, k, allowed, effort=1):
        return np.full(k, -np.inf, np.float32), np.full(k, -1, np.int64)

    monkeypatch.setattr(mem._index, "search", dry)
    res = mem.search(a, 20, modalities=["lidar"])
    assert [n.entry.id for n in res] == want and mem.stats().exact_fallbacks == 1


@pytest.mark.parametrize("backend", ["exact", "faiss_hnsw"])
def test_search_ids_equals_search(backend):
    mem = SceneMemory(make_config(backend))
    db, queries = fill(mem, 500)
    for q in queries[:10]:
        for f in ({}, FILTERS[0], FILTERS[2]):
            res = mem.search(q, 7, min_score=0.1, **f)
            ids, scores = mem.search_ids(q, 7, min_score=0.1, **f)
            assert ids.tolist() == [n.entry.id for n in res]
            np.testing.assert_allclose(scores, [n.score for n in res], atol=1e-6)


@pytest.mark.parametrize("backend", ["exact", "faiss_flat", "faiss_hnsw"])
def test_search_many_equals_one_search_per_row(backend):
    """Several vectors with the same filters (a LiDAR scan's turned views): what a search per vector gives."""
    mem = SceneMemory(make_config(backend))
    db, queries = fill(mem, 500)
    for f in ({}, FILTERS[0], FILTERS[2], FILTERS[-1]):
        many = mem.search_many(queries[:6], 7, min_score=0.1, **f)
        assert len(many) == 6
        for q, res in zip(queries[:6], many):
            one = mem.search(q, 7, min_score=0.1, **f)
            assert [n.entry.id for n in res] == [n.entry.id for n in one]
            np.testing.assert_allclose([n.score for n in res], [n.score for n in one], atol=1e-5)
            assert [n.rank for n in res] == list(range(len(res)))
    assert mem.search_many(queries[:1], 3)[0][0].entry.id == mem.search(queries[0], 3)[0].entry.id
    with pytest.raises(MemoryStoreError, match="k must be"):
        mem.search_many(queries[:2], 0)
    with pytest.raises(MemoryStoreError):
        mem.search_many(np.zeros((2, DIM), np.float32), 3)  # a zero row has no direction
