"""One writer, concurrent readers, a flusher: readers never see torn state, and the store stays consistent."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory
from cmr_fusion_ros.core.types import Modality

DIM = 24
MODS = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)
N = 1500
CAPACITY = 600


def vector_for(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32) + 0.2
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("backend", ["exact", "faiss_hnsw"])
def test_one_writer_many_readers_and_a_flusher(tmp_path, backend):
    cfg = MemoryConfig.from_dict({
        "dim": DIM,
        "index": {"backend": backend, "hnsw_m": 8, "compact_fraction": 0.2},
        "admission": {"enabled": False},
        "capacity": {"max_entries": CAPACITY, "eviction": "oldest"},
        "persistence": {"flush_interval_s": 3600.0, "snapshot_every_n": 400},
    })
    mem = SceneMemory.open(tmp_path / "mem", cfg)
    errors: list[BaseException] = []
    done = threading.Event()
    counts = {"searches": 0, "full": 0}

    def writer():
        try:
            for i in range(1, N + 1):
                e = mem.add(vector_for(i), MODS[i % 3], f"/t{i % 3}", "f", i)
                assert e.id == i
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)
        finally:
            done.set()

    def reader(seed: int):
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                q = vector_for(int(rng.integers(1, N + 1)))
                mods = None if rng.random() < 0.5 else [MODS[int(rng.integers(3))]]
                before = len(mem)
                res = mem.search(q, 10, modalities=mods)
                counts["searches"] += 1
                ids = [nb.entry.id for nb in res]
                assert len(set(ids)) == len(ids)
                assert all(a.score >= b.score - 1e-6 for a, b in zip(res, res[1:]))
                if before >= 100:
                    assert len(res) == 10, f"short list ({len(res)}) from a memory of {before}"
                    counts["full"] += 1
                for nb in res:
                    e = nb.entry
                    # metadata, vector and score all belong to the same entry: no torn rows
                    np.testing.assert_allclose(e.vector, vector_for(e.id), rtol=1e-5, atol=1e-6)
                    assert e.stamp_ns == e.id and e.modality is MODS[e.id % 3] and e.topic == f"/t{e.id % 3}"
                    assert abs(nb.score - float(q @ e.vector)) < 1e-4
                    if mods is not None:
                        assert e.modality is mods[0]
                s = mem.stats()
                assert s.entries <= CAPACITY and s.entries + s.tombstones == s.slots
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    def flusher():
        try:
            k = 0
            while not done.wait(0.005):
                mem.flush()
                k += 1
                if k % 20 == 0:
                    mem.snapshot()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=flusher))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    assert not errors, errors[0]
    assert counts["full"] > 10
    assert mem.ids().tolist() == list(range(N - CAPACITY + 1, N + 1))
    s = mem.stats()
    assert s.snapshots >= 1 and s.compactions >= 1 and s.evicted == N - CAPACITY
    mem.close()
    with SceneMemory.open(tmp_path / "mem", cfg) as again:
        assert again.ids().tolist() == list(range(N - CAPACITY + 1, N + 1))
        assert again.search(vector_for(N), 1)[0].entry.id == N
