"""Writer process for the crash test: appends entries to a scene memory and reports what was flushed.

Usage: python memory_crash_writer.py DIRECTORY BACKEND SEED CAPACITY

Prints ``READY <next_id>`` once the memory is open, then ``FLUSHED <last id>`` after each ``flush()`` returned (the
entries up to that id are then durable). Entry i has stamp i, modality i % 3 and a vector derived from i (see
``vector_for``), so a reader can check every entry it finds. It runs until killed.
"""

from __future__ import annotations

import sys

import numpy as np

from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory
from cmr_fusion_ros.core.types import Pose

DIM = 16
MODS = ("camera", "lidar", "radar")


def config(backend: str, capacity: int) -> MemoryConfig:
    return MemoryConfig.from_dict({
        "dim": DIM,
        "index": {"backend": backend, "hnsw_m": 8, "compact_fraction": 0.3},
        "admission": {"enabled": False},
        "capacity": {"max_entries": capacity, "eviction": "oldest"},
        "persistence": {"flush_interval_s": 3600.0, "snapshot_every_n": 97},
    })


def vector_for(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32) + 0.1


def main() -> None:
    directory, backend, seed, capacity = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(seed)
    mem = SceneMemory.open(directory, config(backend, capacity))
    i = mem.stats().next_id
    print(f"READY {i}", flush=True)
    while True:
        for _ in range(int(rng.integers(1, 40))):
            e = mem.add(vector_for(i), MODS[i % 3], f"/topic{i % 2}", "frame", i, Pose(i, 0, 0) if i % 2 else None,
                        f"s{seed}")
            assert e is not None and e.id == i, (e, i)
            i += 1
        mem.flush()
        print(f"FLUSHED {i - 1}", flush=True)


if __name__ == "__main__":
    main()
