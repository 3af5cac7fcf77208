"""Configuration of the scene memory: a frozen dataclass that validates itself.

``MemoryConfig.from_dict(d)`` takes the ``memory:`` section of a YAML file (a nested dict) and raises
:class:`~cmr_fusion_ros.core.errors.ConfigError` naming the full key (``memory.index.hnsw_m``), the value and what is
allowed. Unknown keys are refused too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cmr_fusion_ros.core.errors import ConfigError
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
    "PostgresConfig",
    "STORES",
    "resolve_robot_id",
    "uri_has_password",
]

STORES = ("local", "postgres")
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


def resolve_robot_id(robot_id: str, namespace: str = "") -> str:
    """``memory.robot_id``, else the node's namespace without slashes (``/car1`` -> ``car1``), else the host name."""
    if robot_id:
        return robot_id
    ns = namespace.strip("/")
    if ns:
        return ns
    import socket

    return socket.gethostname()


def uri_has_password(uri: str) -> bool:
    """True when a ``postgresql://`` URI carries a password (``user:secret@host`` or ``?password=``)."""
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(uri)
        return bool(parts.password) or "password" in parse_qs(parts.query)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """The PostgreSQL + pgvector store (``memory.store: postgres``).

    uri: ``postgresql://[user@]host[:port]/dbname[?sslmode=verify-full&...]`` of a server with pgvector, never with
    a password (parameters are visible to the whole ROS graph): the secret comes from libpq's usual places
    (``PGPASSFILE``, ``~/.pgpass``, a service file) or from ``passfile``.
    passfile: path of a libpq password file ('' = libpq's default places).
    write_queue: entries buffered while the database is slow or away; when full, the oldest is dropped (counted).
    batch_size: entries written per transaction by the background writer.
    retry_interval_s: wait between reconnection attempts while the database is away.
    connect_timeout_s: how long one connection attempt may take.
    statement_timeout_ms: a search taking longer fails soft (counted) instead of stalling the node.
    """

    uri: str = ""
    passfile: str = ""
    write_queue: int = 100_000
    batch_size: int = 500
    retry_interval_s: float = 1.0
    connect_timeout_s: float = 3.0
    statement_timeout_ms: int = 2000

    KEYS = ("uri", "passfile", "write_queue", "batch_size", "retry_interval_s", "connect_timeout_s",
            "statement_timeout_ms")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory.postgres") -> "PostgresConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        uri = read_str(d, prefix, "uri", "")
        if uri and not uri.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{prefix}.uri", uri, "a postgresql:// URI")
        if uri_has_password(uri):
            raise ConfigError(f"{prefix}.uri", "<hidden: it contains a password>",
                              "a URI without a password (ROS parameters are visible to the whole graph): put the "
                              "secret in PGPASSFILE, ~/.pgpass, a service file or memory.postgres.passfile")
        return cls(
            uri=uri,
            passfile=read_str(d, prefix, "passfile", ""),
            write_queue=read_int(d, prefix, "write_queue", 100_000, 1),
            batch_size=read_int(d, prefix, "batch_size", 500, 1, 100_000),
            retry_interval_s=read_float(d, prefix, "retry_interval_s", 1.0, 0.01, 3600.0),
            connect_timeout_s=read_float(d, prefix, "connect_timeout_s", 3.0, 0.1, 600.0),
            statement_timeout_ms=read_int(d, prefix, "statement_timeout_ms", 2000, 0),
        )


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Everything the scene memory needs; compose it into a larger config under the key ``memory``.

    store: ``local`` (a folder on this robot, ``persistence``) or ``postgres`` (a shared PostgreSQL + pgvector
    database, ``postgres``). robot_id: who writes the entries ('' = the node's namespace, else the host name).
    """

    dim: int = 256
    store: str = "local"
    robot_id: str = ""
    index: IndexConfig = field(default_factory=IndexConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    persistence: PersistenceConfig = field(default_factory=PersistenceConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)

    KEYS = ("dim", "store", "robot_id", "index", "capacity", "admission", "persistence", "postgres")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "memory") -> "MemoryConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        cfg = cls(
            dim=read_int(d, prefix, "dim", 256, 1, 65536),
            store=read_choice(d, prefix, "store", "local", STORES),
            robot_id=read_str(d, prefix, "robot_id", ""),
            index=IndexConfig.from_dict(d.get("index"), f"{prefix}.index"),
            capacity=CapacityConfig.from_dict(d.get("capacity"), f"{prefix}.capacity"),
            admission=AdmissionConfig.from_dict(d.get("admission"), f"{prefix}.admission"),
            persistence=PersistenceConfig.from_dict(d.get("persistence"), f"{prefix}.persistence"),
            postgres=PostgresConfig.from_dict(d.get("postgres"), f"{prefix}.postgres"),
        )
        if cfg.store == "postgres":
            if not cfg.postgres.uri:
                raise ConfigError(f"{prefix}.postgres.uri", "", "a postgresql:// URI when memory.store is postgres")
            if cfg.capacity.max_entries:
                raise ConfigError(f"{prefix}.capacity.max_entries", cfg.capacity.max_entries,
                                  "0 when memory.store is postgres (the database keeps every entry)")
            if cfg.index.backend == "faiss_ivf":
                raise ConfigError(f"{prefix}.index.backend", "faiss_ivf",
                                  "exact | faiss_flat (exact scans) | faiss_hnsw (pgvector HNSW) when memory.store is "
                                  "postgres")
        return cfg
