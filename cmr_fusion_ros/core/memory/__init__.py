"""Scene memory: remembered embeddings with metadata, searched by cosine similarity, persisted crash-safely.

No ROS here. ``SceneMemory`` is the API the nodes call; ``MemoryConfig`` its validated configuration.
"""

from cmr_fusion_ros.core.memory.config import (
    AdmissionConfig,
    CapacityConfig,
    IndexConfig,
    MemoryConfig,
    PersistenceConfig,
)
from cmr_fusion_ros.core.memory.entry import MemoryEntry, Neighbor, RejectReason, Rejection
from cmr_fusion_ros.core.memory.index import INDEX_BACKENDS
from cmr_fusion_ros.core.memory.scene import MemoryStats, SceneMemory
from cmr_fusion_ros.core.memory.store import open_memory

__all__ = [
    "INDEX_BACKENDS",
    "AdmissionConfig",
    "CapacityConfig",
    "IndexConfig",
    "MemoryConfig",
    "MemoryEntry",
    "MemoryStats",
    "Neighbor",
    "PersistenceConfig",
    "RejectReason",
    "Rejection",
    "SceneMemory",
    "open_memory",
]
