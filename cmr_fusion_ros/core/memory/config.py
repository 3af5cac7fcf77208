"""Configuration of the scene memory: a frozen dataclass that validates itself.

``MemoryConfig.from_dict(d)`` takes the ``memory:`` section of a YAML file (a nested dict) and raises
:class:`~cmr_fusion_ros.core.errors.ConfigError` naming the full key (``memory.index.hnsw_m``), the value and what is
allowed. Unknown keys are refused too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cmr_fusion_ros.core.validate import (no_unknown, read_bool, read_choice, read_float, read_int, read_str,
                                          section)

__all__ = [
    "BACKENDS",
    "EVICTION_RULES",
    "AdmissionConfig",
    "CapacityConfig",
    "IndexConfig",
    "MemoryConfig",
    "PersistenceConfig",
]

BACKENDS = ("exact", "faiss_flat", "faiss_hnsw", "faiss_ivf")
EVICTION_RULES = ("oldest", "oldest_same_modality", "reject")


# --- the config ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Which index answers searches, and its parameters.

    backend: ``exact`` (numpy, no extra dependency), ``faiss_flat`` (exact, FAISS), ``faiss_hnsw``, ``faiss_ivf``.
    filter_exact_below: a filtered search whose filter leaves at most this many entries is answered exactly over that
    subset (cheaper and better than an approximate index at low selectivity).
    compact_fraction: evicted/cleared entries stay as tombstones in the index until they are this fraction of it,
    then the index is rebuilt from the live vectors (HNSW cannot remove).
    ivf_train_size: entries needed before an IVF index is trained (0 = 39 x nlist); until then searches are exact.
    faiss_threads: OpenMP threads FAISS may use (0 = leave FAISS's default). This is process-wide. One thread suits
    a node that adds and searches one vector at a time: a multi-threaded FAISS call on one vector mostly waits for
    thread wake-ups, badly so on a busy machine.
    """

    backend: str = "exact"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nlist: int = 1024
    ivf_nprobe: int = 16
    ivf_train_size: int = 0
    filter_exact_below: int = 8192
    compact_fraction: float = 0.25
    faiss_threads: int = 0

    KEYS = (
        "backend", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe",
        "ivf_train_size", "filter_exact_below", "compact_fraction", "faiss_threads",
    )

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory.index") -> "IndexConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        nlist = read_int(d, prefix, "ivf_nlist", 1024, 1, 1 << 20)
        return cls(
            backend=read_choice(d, prefix, "backend", "exact", BACKENDS),
            hnsw_m=read_int(d, prefix, "hnsw_m", 32, 4, 256),
            hnsw_ef_construction=read_int(d, prefix, "hnsw_ef_construction", 80, 8, 4096),
            hnsw_ef_search=read_int(d, prefix, "hnsw_ef_search", 64, 1, 65536),
            ivf_nlist=nlist,
            ivf_nprobe=read_int(d, prefix, "ivf_nprobe", min(16, nlist), 1, nlist),
            ivf_train_size=read_int(d, prefix, "ivf_train_size", 0, 0),
            filter_exact_below=read_int(d, prefix, "filter_exact_below", 8192, 0),
            compact_fraction=read_float(d, prefix, "compact_fraction", 0.25, 0.01, 1.0),
            faiss_threads=read_int(d, prefix, "faiss_threads", 0, 0, 1024),
        )

    @property
    def effective_train_size(self) -> int:
        return self.ivf_train_size or 39 * self.ivf_nlist

    def index_params(self) -> dict[str, Any]:
        """The parameters that shape a saved index; a saved index is reused only when these match."""
        if self.backend == "faiss_hnsw":
            return {"backend": self.backend, "hnsw_m": self.hnsw_m, "hnsw_ef_construction": self.hnsw_ef_construction}
        if self.backend == "faiss_ivf":
            return {"backend": self.backend, "ivf_nlist": self.ivf_nlist}
        return {"backend": self.backend}


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """How many entries the memory keeps, and what happens when it is full.

    max_entries: 0 = unlimited.
    eviction: ``oldest`` evicts the entry with the smallest id (first in, first out, across modalities);
    ``oldest_same_modality`` evicts the oldest entry of the incoming entry's modality (or the oldest overall when that
    modality has none), so one busy sensor cannot push the others out; ``reject`` keeps the memory as it is and
    refuses the new entry (``add`` returns None, reason ``capacity``).
    """

    max_entries: int = 0
    eviction: str = "oldest"

    KEYS = ("max_entries", "eviction")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory.capacity") -> "CapacityConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        return cls(
            max_entries=read_int(d, prefix, "max_entries", 0, 0),
            eviction=read_choice(d, prefix, "eviction", "oldest", EVICTION_RULES),
        )


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """Near-duplicate filter.

    A new entry is skipped when its cosine similarity with the last kept entry of the same (modality, topic) is above
    ``duplicate_cosine`` and the sensor moved less than ``duplicate_distance_m`` since that entry. When either pose is
    unknown, movement cannot be measured and the cosine test alone decides.
    """

    enabled: bool = True
    duplicate_cosine: float = 0.98
    duplicate_distance_m: float = 0.5

    KEYS = ("enabled", "duplicate_cosine", "duplicate_distance_m")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory.admission") -> "AdmissionConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        return cls(
            enabled=read_bool(d, prefix, "enabled", True),
            duplicate_cosine=read_float(d, prefix, "duplicate_cosine", 0.98, -1.0, 1.0),
            duplicate_distance_m=read_float(d, prefix, "duplicate_distance_m", 0.5, 0.0),
        )


@dataclass(frozen=True, slots=True)
class PersistenceConfig:
    """Where and how often the memory is written.

    directory: '' keeps the memory in RAM only.
    flush_interval_s: ``add`` writes and fsyncs the journal when this much time passed since the last flush (0 = at
    every add). A crash loses at most the entries added since the last flush.
    snapshot_every_n: after this many journal records a snapshot is written and the journal restarts (0 = only on
    ``snapshot()`` and ``close()``).
    save_index: store the FAISS index beside the snapshot so loading need not rebuild it.
    """

    directory: str = ""
    flush_interval_s: float = 1.0
    snapshot_every_n: int = 100_000
    save_index: bool = True

    KEYS = ("directory", "flush_interval_s", "snapshot_every_n", "save_index")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory.persistence") -> "PersistenceConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        return cls(
            directory=read_str(d, prefix, "directory", ""),
            flush_interval_s=read_float(d, prefix, "flush_interval_s", 1.0, 0.0, 3600.0),
            snapshot_every_n=read_int(d, prefix, "snapshot_every_n", 100_000, 0),
            save_index=read_bool(d, prefix, "save_index", True),
        )


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Everything the scene memory needs; compose it into a larger config under the key ``memory``."""

    dim: int = 256
    index: IndexConfig = field(default_factory=IndexConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    persistence: PersistenceConfig = field(default_factory=PersistenceConfig)

    KEYS = ("dim", "index", "capacity", "admission", "persistence")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory") -> "MemoryConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        return cls(
            dim=read_int(d, prefix, "dim", 256, 1, 65536),
            index=IndexConfig.from_dict(d.get("index"), f"{prefix}.index"),
            capacity=CapacityConfig.from_dict(d.get("capacity"), f"{prefix}.capacity"),
            admission=AdmissionConfig.from_dict(d.get("admission"), f"{prefix}.admission"),
            persistence=PersistenceConfig.from_dict(d.get("persistence"), f"{prefix}.persistence"),
        )
