"""Values of the scene memory: entries, neighbours, rejections, and vector validation."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from cmr_fusion_ros.core.errors import MemoryStoreError
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = ["MemoryEntry", "Neighbor", "Rejection", "RejectReason", "duplicate_rejection", "normalise_vector",
           "normalise_vectors"]


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """One remembered embedding and where it came from.

    id: assigned by the memory, starts at 1, increases monotonically and is never reused (0 means "not inserted" in
    ``MatchEvent.query_id``). vector: the L2-normalised float32 embedding, read-only; not part of equality.
    """

    id: int
    modality: Modality
    topic: str
    frame_id: str
    stamp_ns: int
    pose: Pose | None
    session: str
    vector: np.ndarray = field(compare=False, repr=False)
    robot: str = ""  # who wrote it (memory.robot_id); a local memory holds one robot's entries


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A search result: the entry, its cosine similarity with the query, and its rank (0 = best)."""

    entry: MemoryEntry
    score: float
    rank: int


class RejectReason(str, enum.Enum):
    DUPLICATE = "duplicate"
    CAPACITY = "capacity"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why ``SceneMemory.add`` returned None."""

    reason: RejectReason
    detail: str


def duplicate_rejection(last: tuple[np.ndarray, Pose | None] | None, vec: np.ndarray, pose: Pose | None,
                        admission, modality: Modality, topic: str) -> Rejection | None:
    """The near-duplicate rule (``memory.admission``): a Rejection when ``vec`` is too similar to the last kept entry
    of its (modality, topic) and the sensor moved too little since (or either pose is unknown); else None."""
    if last is None:
        return None
    cos = float(last[0] @ vec)
    if cos <= admission.duplicate_cosine:
        return None
    moved = None if pose is None or last[1] is None else pose.distance_to(last[1])
    if moved is not None and moved >= admission.duplicate_distance_m:
        return None
    how = "pose unknown" if moved is None else f"moved {moved:.3f} m"
    return Rejection(
        RejectReason.DUPLICATE,
        f"cosine {cos:.4f} > {admission.duplicate_cosine} with the last kept {modality.value} entry of "
        f"{topic!r} and {how} (< {admission.duplicate_distance_m} m)",
    )


def normalise_vectors(vectors: object, dim: int, where: str = "vector") -> np.ndarray:
    """Validate a (n, dim) or (dim,) array and return a C-contiguous float32 (n, dim) copy with unit rows.

    Raises MemoryStoreError on a wrong shape, a non-finite value or a zero row (which has no direction).
    """
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise MemoryStoreError(where, f"not a numeric array: {err}") from err
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise MemoryStoreError(where, f"expected shape ({dim},) or (n, {dim}), got {tuple(np.shape(vectors))}")
    if not np.isfinite(arr).all():
        raise MemoryStoreError(where, "contains NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1)
    if (norms < 1e-12).any():
        raise MemoryStoreError(where, f"row {int(np.argmin(norms))} has zero length and cannot be normalised")
    return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)


def normalise_vector(vector: object, dim: int, where: str = "vector") -> np.ndarray:
    """Validate one vector and return it as a unit-length float32 (dim,) array."""
    if isinstance(vector, np.ndarray) and vector.dtype == np.float32 and vector.shape == (dim,):
        # fast path: a NaN or infinity anywhere makes the sum of squares non-finite
        ss = float(np.dot(vector, vector))
        if 1e-24 < ss < float("inf"):
            return vector / np.float32(np.sqrt(ss))
    arr = normalise_vectors(vector, dim, where)
    if arr.shape[0] != 1:
        raise MemoryStoreError(where, f"expected one vector, got {arr.shape[0]}")
    return arr[0]
