"""MemoryConfig validation: every bad value names its full key, the value and what is allowed."""

from __future__ import annotations

import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory import MemoryConfig


def test_defaults_and_full_dict_round_trip():
    cfg = MemoryConfig.from_dict({})
    assert cfg == MemoryConfig()
    cfg = MemoryConfig.from_dict(
        {
            "dim": 64,
            "index": {"backend": "faiss_hnsw", "hnsw_m": 16, "hnsw_ef_search": 128, "ivf_nlist": 64, "ivf_nprobe": 8,
                      "faiss_threads": 1},
            "capacity": {"max_entries": 1000, "eviction": "oldest_same_modality"},
            "admission": {"enabled": False, "duplicate_cosine": 0.9, "duplicate_distance_m": 1},
            "persistence": {"directory": "/tmp/x", "flush_interval_s": 0, "snapshot_every_n": 10, "save_index": False},
        }
    )
    assert cfg.dim == 64 and cfg.index.backend == "faiss_hnsw" and cfg.index.hnsw_m == 16
    assert cfg.index.faiss_threads == 1
    assert cfg.capacity.eviction == "oldest_same_modality" and cfg.admission.duplicate_distance_m == 1.0
    assert cfg.persistence.flush_interval_s == 0.0 and cfg.persistence.save_index is False


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({"dim": 0}, "memory.dim"),
        ({"dim": "256"}, "memory.dim"),
        ({"dim": True}, "memory.dim"),
        ({"index": {"backend": "annoy"}}, "memory.index.backend"),
        ({"index": {"hnsw_m": 2}}, "memory.index.hnsw_m"),
        ({"index": {"ivf_nlist": 16, "ivf_nprobe": 17}}, "memory.index.ivf_nprobe"),
        ({"index": {"compact_fraction": 0.0}}, "memory.index.compact_fraction"),
        ({"index": {"hnsw_M": 16}}, "memory.index.hnsw_M"),
        ({"index": {"faiss_threads": -1}}, "memory.index.faiss_threads"),
        ({"capacity": {"eviction": "random"}}, "memory.capacity.eviction"),
        ({"capacity": {"max_entries": -1}}, "memory.capacity.max_entries"),
        ({"admission": {"duplicate_cosine": 1.5}}, "memory.admission.duplicate_cosine"),
        ({"admission": {"duplicate_distance_m": float("nan")}}, "memory.admission.duplicate_distance_m"),
        ({"admission": {"enabled": "yes"}}, "memory.admission.enabled"),
        ({"persistence": {"flush_interval_s": -1}}, "memory.persistence.flush_interval_s"),
        ({"persistence": {"directory": 3}}, "memory.persistence.directory"),
        ({"persistence": []}, "memory.persistence"),
        ({"colour": 1}, "memory.colour"),
    ],
)
def test_bad_values_name_the_key(d, key):
    with pytest.raises(ConfigError) as info:
        MemoryConfig.from_dict(d)
    assert info.value.key == key
    assert "allowed" in str(info.value) and key in str(info.value)


def test_prefix_is_used_in_keys():
    with pytest.raises(ConfigError, match=r"fusion\.memory\.index\.hnsw_ef_search"):
        MemoryConfig.from_dict({"index": {"hnsw_ef_search": 0}}, prefix="fusion.memory")
