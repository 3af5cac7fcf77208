"""The scene memory: entries + vector index + admission + capacity + crash-safe persistence, thread-safe.

Concurrency: one writer (``add``, ``add_batch``, ``clear``) and any number of concurrent readers (``search``,
``get``, ``stats``), guarded by a writer-preferring readers-writer lock; a reader never sees an entry half added.
``flush`` and ``snapshot`` may run from another thread (a timer); they take the lock only for a moment.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from cmr_fusion_ros.core.errors import MemoryStoreError
from cmr_fusion_ros.core.memory import persist
from cmr_fusion_ros.core.memory.config import MemoryConfig
from cmr_fusion_ros.core.memory.entry import (
    MemoryEntry,
    Neighbor,
    RejectReason,
    Rejection,
    duplicate_rejection,
    normalise_vector,
    normalise_vectors,
)
from cmr_fusion_ros.core.memory.index import VectorStore, exact_search, exact_search_many, make_index
from cmr_fusion_ros.core.memory.rwlock import RWLock
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = ["MemoryStats", "SceneMemory"]

MODALITIES: tuple[Modality, ...] = tuple(Modality)
_CODE = {m: i for i, m in enumerate(MODALITIES)}
_MAX_EFFORT = 64
_DELETE_CHUNK = 65536
_CREATION_LEFTOVERS = {"LOCK", "journal-000000.log", "journal-000000.log.tmp", "MANIFEST.json.tmp"}
_OWN_FILE = re.compile(r"^(snapshot-\d+\.npz|index-\d+\.faiss|journal-\d+\.log)(\.tmp)?$|^MANIFEST\.json\.tmp$")


def never_created(path: str | Path) -> bool:
    """True when ``path`` holds no scene memory yet: missing, empty, or only the files of a creation that was killed
    before it wrote its first MANIFEST.json (no entry can have been stored)."""
    p = Path(path)
    if not p.exists():
        return True
    if not p.is_dir() or (p / persist.MANIFEST).exists():
        return False
    return {q.name for q in p.iterdir()} <= _CREATION_LEFTOVERS


def _modality(value: Modality | str) -> Modality:
    return value if isinstance(value, Modality) else Modality.parse(value)


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MemoryStoreError("search", f"k must be an integer >= 1, got {k!r}")


def _codes(modalities: Iterable[Modality | str] | Modality | str | None) -> list[int] | None:
    if modalities is None:
        return None
    if isinstance(modalities, str):  # one modality (Modality is a str too)
        modalities = (modalities,)
    return sorted({_CODE[_modality(m)] for m in modalities})


def _modality_mask(modalities: np.ndarray, codes: list[int]) -> np.ndarray:
    """``modalities`` equal to one of ``codes`` (a few codes: one comparison each; ``np.isin`` costs ~10x more on a
    memory of a few thousand entries, paid by every search)."""
    mask = modalities == codes[0]
    for code in codes[1:]:
        mask |= modalities == code
    return mask


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """Counters and state of a scene memory (for diagnostics)."""

    entries: int
    entries_by_modality: dict[str, int]
    slots: int
    tombstones: int
    dim: int
    backend: str
    index_ready: bool
    next_id: int
    added: int
    skipped_duplicate: int
    skipped_capacity: int
    evicted: int
    cleared: int
    compactions: int
    search_retries: int
    exact_fallbacks: int
    flushes: int
    snapshots: int
    pending_records: int
    generation: int
    directory: str
    torn_tail_bytes: int
    index_loaded: bool
    load_seconds: float
    # the store: local (this folder) or postgres, and the database side's counters (0 / True for a local memory)
    store: str = "local"
    robot: str = ""
    connected: bool = True
    write_queue: int = 0
    dropped_writes: int = 0
    write_failures: int = 0
    search_failures: int = 0


class _Columns:
    """Growable per-slot metadata columns. Rows are never changed in place except the ``alive`` flag."""

    SPEC = {
        "ids": (np.int64, ()),
        "modality": (np.uint8, ()),
        "stamp_ns": (np.int64, ()),
        "pose": (np.float64, (7,)),
        "pose_valid": (np.bool_, ()),
        "topic": (np.int32, ()),
        "frame": (np.int32, ()),
        "session": (np.int32, ()),
        "alive": (np.bool_, ()),
    }

    META = ("ids", "modality", "stamp_ns", "pose_valid", "topic", "frame", "session")

    def __init__(self, capacity: int = 1024) -> None:
        self.n = 0
        self.a = {k: np.empty((capacity,) + shape, dtype) for k, (dtype, shape) in self.SPEC.items()}
        # the same immutable fields again, row-wise, so that one gather fetches a result's metadata
        self.meta = np.empty((capacity, len(self.META)), np.int64)

    _META_AT = tuple(map(list(SPEC).index, META))  # where each META field is in a SPEC-ordered row

    def append_one(self, values: tuple) -> None:
        """One row given as values in ``SPEC``'s order (what ``append`` does for one row, without building nine
        one-element arrays: the per-frame insert of a node)."""
        self._reserve(1)
        n = self.n
        for k, v in zip(self.SPEC, values):
            self.a[k][n] = v
        self.meta[n] = [values[i] for i in self._META_AT]
        self.n = n + 1

    def append(self, rows: dict[str, np.ndarray]) -> None:
        m = rows["ids"].shape[0]
        self._reserve(m)
        for k in self.SPEC:
            self.a[k][self.n : self.n + m] = rows[k]
        for j, k in enumerate(self.META):
            self.meta[self.n : self.n + m, j] = rows[k]
        self.n += m

    def _reserve(self, m: int) -> None:
        cap = self.a["ids"].shape[0]
        if self.n + m > cap:
            new_cap = max(2 * cap, self.n + m)
            grown = {}
            for k, (dtype, shape) in self.SPEC.items():
                arr = np.empty((new_cap,) + shape, dtype)
                arr[: self.n] = self.a[k][: self.n]
                grown[k] = arr
            meta = np.empty((new_cap, len(self.META)), np.int64)
            meta[: self.n] = self.meta[: self.n]
            self.a, self.meta = grown, meta

    def view(self, key: str) -> np.ndarray:
        return self.a[key][: self.n]

    def replace(self, rows: dict[str, np.ndarray]) -> None:
        n = rows["ids"].shape[0]
        self.a = {}
        for k, (dtype, shape) in self.SPEC.items():
            arr = np.empty((max(n, 1024),) + shape, dtype)
            arr[:n] = rows[k]
            self.a[k] = arr
        self.meta = np.empty((max(n, 1024), len(self.META)), np.int64)
        for j, k in enumerate(self.META):
            self.meta[:n, j] = rows[k]
        self.n = n


class _Strings:
    """Append-only string table (topics, frames, sessions are few and repeat)."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}
        for s in items:
            self.get_or_add(s)

    def get_or_add(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = len(self.items)
            self.items.append(s)
            self.index[s] = i
        return i


class SceneMemory:
    """Remembered embeddings with metadata, searched by cosine similarity.

    Create with ``SceneMemory(config)`` (directory from ``config.persistence.directory``; '' = RAM only) or
    ``SceneMemory.open(directory, config)``, which loads an existing memory directory or creates one in a missing or
    empty directory. A directory with files but no valid manifest, or a damaged one, raises MemoryStoreError and is
    left untouched. Use as a context manager or call ``close()`` (which writes a snapshot).
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        directory: str | os.PathLike | None = None,
        read_only: bool = False,
    ) -> None:
        self._config = config if config is not None else MemoryConfig()
        self._dim = self._config.dim
        self._robot = self._config.robot_id
        self._rw = RWLock()
        self._io_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._store = VectorStore(self._dim)
        self._cols = _Columns()
        self._index = make_index(self._store, self._config.index)
        self._strings = {"topic": _Strings(), "frame": _Strings(), "session": _Strings()}
        self._next_id = 1
        self._n_alive = 0
        self._n_dead = 0
        self._hint_all = 0
        self._hint_mod = [0] * len(MODALITIES)
        self._last_kept: dict[tuple[int, str], tuple[np.ndarray, Pose | None]] = {}
        self._pending = bytearray()
        self._pending_records = 0
        self._records_since_snapshot = 0
        self._count = dict.fromkeys(
            ("added", "skipped_duplicate", "skipped_capacity", "evicted", "cleared", "compactions",
             "search_retries", "exact_fallbacks", "flushes", "snapshots"), 0)
        self.last_rejection: Rejection | None = None
        self._dir: Path | None = None
        self._read_only = read_only
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._generation = 0
        self._torn_bytes = 0
        self._index_loaded = False
        self._load_seconds = 0.0
        self._last_flush = time.monotonic()
        self._closed = False
        if directory is None and self._config.persistence.directory:
            directory = self._config.persistence.directory
        if directory is not None:
            t0 = time.perf_counter()
            self._open_dir(Path(directory).expanduser())  # the default ~/.ros/... is the user's, not a "~" folder here
            self._load_seconds = time.perf_counter() - t0
        elif read_only:
            raise MemoryStoreError("open", "read_only needs a directory")

    @classmethod
    def open(
        cls, directory: str | os.PathLike, config: MemoryConfig | None = None, *, read_only: bool = False
    ) -> "SceneMemory":
        """Load the memory stored in ``directory``, or create one there when it is missing or empty.

        Only one process may open a directory for writing (a ``LOCK`` file is flock'ed). ``read_only=True`` takes no
        lock and writes nothing (a torn journal tail is skipped, not truncated); it reads the last flushed state, and
        may fail if the writer replaces its snapshot at that moment (retry)."""
        return cls(config, directory=directory, read_only=read_only)

    # --- properties ---------------------------------------------------------------------------------------------

    @property
    def config(self) -> MemoryConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def robot(self) -> str:
        """The robot id written with (and reported for) every entry of this memory."""
        return self._robot

    @property
    def directory(self) -> Path | None:
        return self._dir

    def __len__(self) -> int:
        return self._n_alive

    def __enter__(self) -> "SceneMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------------------------

    def add(
        self,
        vector: object,
        modality: Modality | str,
        topic: str,
        frame_id: str,
        stamp_ns: int,
        pose: Pose | None = None,
        session: str = "",
    ) -> MemoryEntry | None:
        """Remember one embedding. Returns the new entry, or None when admission or capacity refused it (the reason
        is in ``last_rejection``). May flush or snapshot when the configured interval or count is reached."""
        self._check_writable("add")
        vec = normalise_vector(vector, self._dim, "add.vector")
        mod = _modality(modality)
        code = _CODE[mod]
        stamp_ns = self._check_meta(topic, frame_id, stamp_ns, pose, session)
        cfg = self._config
        with self._rw.write():
            if cfg.admission.enabled:
                rej = duplicate_rejection(self._last_kept.get((code, topic)), vec, pose, cfg.admission, mod, topic)
                if rej is not None:
                    self._count["skipped_duplicate"] += 1
                    self.last_rejection = rej
                    return None
            if not self._make_room(1, code):
                self._count["skipped_capacity"] += 1
                self.last_rejection = Rejection(
                    RejectReason.CAPACITY, f"memory full ({self._n_alive} entries) and eviction is 'reject'"
                )
                return None
            self._insert_one(self._next_id, code, stamp_ns, pose, topic, frame_id, session, vec)
            slot = self._cols.n - 1
            entry = self._entry_at(slot)
            self._maybe_compact()
        self.last_rejection = None
        self._after_write()
        return entry

    def add_batch(
        self,
        vectors: object,
        modality: Modality | str,
        topic: str,
        frame_id: str,
        stamps_ns: object,
        poses: object | None = None,
        session: str = "",
    ) -> np.ndarray:
        """Bulk insert (bag import, benchmarks): one modality/topic/frame/session, no duplicate admission; capacity
        applies (with 'reject' only the entries that fit are kept). Returns the new ids (int64)."""
        self._check_writable("add_batch")
        vecs = normalise_vectors(vectors, self._dim, "add_batch.vectors")
        m = vecs.shape[0]
        stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
        if stamps.shape[0] != m:
            raise MemoryStoreError("add_batch", f"{stamps.shape[0]} stamps for {m} vectors")
        if poses is None:
            pose_arr = np.full((m, 7), np.nan)
            valid = np.zeros(m, bool)
        else:
            pose_arr = np.asarray(poses, dtype=np.float64)
            if pose_arr.shape != (m, 7) or not np.isfinite(pose_arr).all():
                raise MemoryStoreError("add_batch", f"poses must be a finite ({m}, 7) array, got {pose_arr.shape}")
            valid = np.ones(m, bool)
        mod = _modality(modality)
        code = _CODE[mod]
        self._check_meta(topic, frame_id, 0, None, session)
        with self._rw.write():
            cap = self._config.capacity
            if cap.max_entries:
                if cap.eviction == "reject":
                    m = min(m, max(0, cap.max_entries - self._n_alive))
                    self._count["skipped_capacity"] += vecs.shape[0] - m
                else:
                    m = min(m, cap.max_entries)  # only the newest max_entries of the batch can stay
                    vecs, stamps, pose_arr, valid = vecs[-m:], stamps[-m:], pose_arr[-m:], valid[-m:]
                    self._make_room(m, code)
            vecs, stamps, pose_arr, valid = vecs[:m], stamps[:m], pose_arr[:m], valid[:m]
            ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            rows = {
                "ids": ids,
                "modality": np.full(m, code, np.uint8),
                "stamp_ns": stamps,
                "pose": pose_arr,
                "pose_valid": valid,
                "topic": np.full(m, self._strings["topic"].get_or_add(topic), np.int32),
                "frame": np.full(m, self._strings["frame"].get_or_add(frame_id), np.int32),
                "session": np.full(m, self._strings["session"].get_or_add(session), np.int32),
                "alive": np.ones(m, bool),
            }
            if m:
                self._append(rows, vecs)
                self._next_id += m
                if self._dir is not None:
                    recs = b"".join(
                        persist.encode_add(
                            int(ids[i]), code, int(stamps[i]), tuple(pose_arr[i]) if valid[i] else None,
                            topic, frame_id, session, vecs[i])
                        for i in range(m)
                    )
                    self._journal(recs, m)
                self._last_kept[(code, topic)] = (vecs[-1].copy(), Pose(*pose_arr[-1]) if valid[-1] else None)
                self._count["added"] += m
                self._maybe_compact()
        self._after_write()
        return ids

    def clear(self, modalities: Iterable[Modality | str] | None = None) -> int:
        """Forget every entry (or those of the given modalities). Returns how many were removed."""
        self._check_writable("clear")
        codes = _codes(modalities)
        with self._rw.write():
            mask = self._cols.view("alive").copy()
            if codes is not None:
                mask &= _modality_mask(self._cols.view("modality"), codes)
            slots = np.flatnonzero(mask)
            self._kill(slots)
            self._last_kept = {k: v for k, v in self._last_kept.items() if codes is not None and k[0] not in codes}
            self._count["cleared"] += len(slots)
            self._maybe_compact()
        self._after_write()
        return int(len(slots))

    # --- reading ------------------------------------------------------------------------------------------------

    def search(
        self,
        vector: object,
        k: int = 10,
        *,
        modalities: Iterable[Modality | str] | None = None,
        exclude_newer_than_ns: int | None = None,
        exclude_session: str | None = None,
        min_score: float | None = None,
        robot: str | None = None,
        exclude_robot: str | None = None,
    ) -> list[Neighbor]:
        """The ``k`` entries most similar to ``vector`` (cosine), best first.

        Filters: only ``modalities``; only entries with ``stamp_ns <= exclude_newer_than_ns``; none whose session is
        ``exclude_session``; only scores ``>= min_score``; only ``robot``'s entries, none of
        ``exclude_robot``'s (a local memory holds the entries of one robot, ``memory.robot_id``). The list is
        shorter than ``k`` only when fewer entries pass the filters (or ``min_score``): an approximate index that runs
        dry is retried with more effort and then answered exactly over the filtered subset.
        """
        q, codes = self._query(vector, k, modalities)
        self._rw.acquire_read()
        try:
            scores, slots = self._find(q, int(k), codes, exclude_newer_than_ns, exclude_session, min_score,
                                       self._robot_excluded(robot, exclude_robot))
            entries = self._entries(slots.tolist())
        finally:
            self._rw.release_read()
        return [Neighbor(e, s, rank) for rank, (e, s) in enumerate(zip(entries, scores.tolist()))]

    def search_many(
        self,
        vectors: object,
        k: int = 10,
        *,
        modalities: Iterable[Modality | str] | None = None,
        exclude_newer_than_ns: int | None = None,
        exclude_session: str | None = None,
        min_score: float | None = None,
        robot: str | None = None,
        exclude_robot: str | None = None,
    ) -> list[list[Neighbor]]:
        """:meth:`search` for each row of ``vectors`` (n, dim) with the same filters, which are applied once (the
        exact index scores all rows in one matrix product): a LiDAR scan's turned views."""
        _check_k(k)
        qs, codes = normalise_vectors(vectors, self._dim, "search_many.vectors"), _codes(modalities)
        self._rw.acquire_read()
        try:
            found = self._find_many(qs, int(k), codes, exclude_newer_than_ns, exclude_session, min_score,
                                    self._robot_excluded(robot, exclude_robot))
            out = []
            for scores, slots in found:
                entries = self._entries(slots.tolist())
                out.append([Neighbor(e, sc, rank) for rank, (e, sc) in enumerate(zip(entries, scores.tolist()))])
        finally:
            self._rw.release_read()
        return out

    def search_ids(
        self,
        vector: object,
        k: int = 10,
        *,
        modalities: Iterable[Modality | str] | None = None,
        exclude_newer_than_ns: int | None = None,
        exclude_session: str | None = None,
        min_score: float | None = None,
        robot: str | None = None,
        exclude_robot: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` but returns only (ids int64, scores float32), best first: the lean path for callers that
        need many queries and few entries (look them up with ``get``)."""
        q, codes = self._query(vector, k, modalities)
        self._rw.acquire_read()
        try:
            scores, slots = self._find(q, int(k), codes, exclude_newer_than_ns, exclude_session, min_score,
                                       self._robot_excluded(robot, exclude_robot))
            ids = self._cols.a["ids"][slots]
        finally:
            self._rw.release_read()
        return ids, scores

    def _query(self, vector: object, k: int, modalities) -> tuple[np.ndarray, list[int] | None]:
        _check_k(k)
        return normalise_vector(vector, self._dim, "search.vector"), _codes(modalities)

    _EMPTY = (np.empty(0, np.float32), np.empty(0, np.int64))

    def _robot_excluded(self, robot: str | None, exclude_robot: str | None) -> bool:
        """True when the robot filters exclude every entry (all of them are this memory's robot's)."""
        return (robot is not None and robot != self._robot) or (exclude_robot is not None
                                                                 and exclude_robot == self._robot)

    def _find(self, q, k, codes, exclude_newer_than_ns, exclude_session, min_score,
              none: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots) under the read lock."""
        return self._find_many(q[None], k, codes, exclude_newer_than_ns, exclude_session, min_score, none)[0]

    def _find_many(self, qs, k, codes, exclude_newer_than_ns, exclude_session, min_score, none: bool = False) -> list:
        """[(scores, slots)] per row of ``qs`` under the read lock; the filters are evaluated once."""
        if self._closed:
            raise MemoryStoreError("search", "the memory is closed")
        if codes is not None and not codes or self._n_alive == 0 or none:
            return [self._EMPTY] * len(qs)
        n = self._cols.n
        allowed = None
        n_ok = self._n_alive
        if (
            (codes is not None and len(codes) < len(MODALITIES))
            or exclude_newer_than_ns is not None
            or exclude_session is not None
            or self._n_dead
        ):
            allowed = self._cols.a["alive"][:n].copy()
            if codes is not None and len(codes) < len(MODALITIES):
                mods = self._cols.a["modality"][:n]
                allowed &= _modality_mask(mods, codes)
            if exclude_newer_than_ns is not None:
                allowed &= self._cols.a["stamp_ns"][:n] <= int(exclude_newer_than_ns)
            if exclude_session is not None:
                sidx = self._strings["session"].index.get(exclude_session)
                if sidx is not None:
                    allowed &= self._cols.a["session"][:n] != sidx
            n_ok = int(np.count_nonzero(allowed))
        want = min(k, n_ok)
        if want == 0:
            return [self._EMPTY] * len(qs)
        if len(qs) > 1 and not self._index.approximate:  # one matrix product for all rows
            found = exact_search_many(self._store.view(), qs, k, allowed)
        else:
            found = [self._search_slots(q, k, allowed, n_ok, want) for q in qs]
        if min_score is not None:
            for i, (scores, slots) in enumerate(found):
                keep = int(np.count_nonzero(scores >= min_score))  # scores are sorted, best first
                found[i] = (scores[:keep], slots[:keep])
        return found

    def get(self, entry_id: int) -> MemoryEntry | None:
        """The live entry with this id, or None."""
        with self._rw.read():
            slot = self._slot_of(int(entry_id))
            return None if slot is None else self._entry_at(slot)

    def ids(self) -> np.ndarray:
        """Ids of all live entries, ascending."""
        with self._rw.read():
            return self._cols.view("ids")[self._cols.view("alive")].copy()

    def entries(self, chunk: int = 4096) -> Iterable[MemoryEntry]:
        """Every live entry in id order (export); each chunk is read under the lock."""
        start = 0
        while True:
            with self._rw.read():
                alive = np.flatnonzero(self._cols.view("alive")[start:]) + start
                slots = alive[:chunk].tolist()
                found = self._entries(slots)
            if not slots:
                return
            yield from found
            start = slots[-1] + 1

    def add_entries(self, entries: Iterable[MemoryEntry]) -> int:
        """Insert entries that keep their ids (``cmr-fusion memory export``): ids must increase and be above every
        id this memory has used; no admission or capacity rules. Returns how many were added."""
        self._check_writable("add_entries")
        added = 0
        with self._rw.write():
            for e in entries:
                if e.id < self._next_id:
                    raise MemoryStoreError("add_entries", f"id {e.id} is not above the memory's ids "
                                                          f"(next {self._next_id})")
                vec = normalise_vector(e.vector, self._dim, "add_entries.vector")
                self._insert_one(e.id, _CODE[e.modality], e.stamp_ns, e.pose, e.topic, e.frame_id, e.session, vec)
                added += 1
        self._after_write()
        return added

    def stats(self) -> MemoryStats:
        with self._rw.read():
            mods = self._cols.view("modality")[self._cols.view("alive")]
            counts = np.bincount(mods, minlength=len(MODALITIES))
            with self._pending_lock:
                pending = self._pending_records
            return MemoryStats(
                entries=self._n_alive,
                entries_by_modality={m.value: int(counts[i]) for i, m in enumerate(MODALITIES)},
                slots=self._cols.n,
                tombstones=self._n_dead,
                dim=self._dim,
                backend=self._config.index.backend,
                index_ready=self._index.ready,
                next_id=self._next_id,
                pending_records=pending,
                generation=self._generation,
                directory=str(self._dir) if self._dir else "",
                torn_tail_bytes=self._torn_bytes,
                index_loaded=self._index_loaded,
                load_seconds=self._load_seconds,
                robot=self._robot,
                **self._count,
            )

    # --- persistence --------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write the journal records added since the last flush and fsync. Returns how many were written; after it
        returns, those entries survive a crash. No-op (0) for a memory without directory or opened read-only."""
        if self._dir is None or self._read_only or self._fd is None:
            return 0
        with self._io_lock:
            return self._flush_locked()

    def snapshot(self) -> bool:
        """Write the whole state as a new snapshot and start a new journal (atomically). Readers keep searching
        meanwhile; the writer waits. Returns False for a memory without directory or opened read-only."""
        if self._dir is None or self._read_only or self._fd is None:
            return False
        with self._io_lock:
            self._snapshot_locked()
        return True

    def close(self) -> None:
        """Flush, write a final snapshot when anything changed, release the directory. Idempotent."""
        if self._closed:
            return
        try:
            if self._dir is not None and not self._read_only and self._fd is not None:
                with self._io_lock:
                    if self._records_since_snapshot or self._pending_records:
                        self._snapshot_locked()
                    else:
                        self._flush_locked()
        finally:
            with self._rw.write():
                self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # --- internals: index and slots -----------------------------------------------------------------------------

    def _check_writable(self, op: str) -> None:
        if self._closed:
            raise MemoryStoreError(op, "the memory is closed")
        if self._read_only:
            raise MemoryStoreError(op, "the memory was opened read-only")

    @staticmethod
    def _check_meta(topic, frame_id, stamp_ns, pose, session) -> int:
        for name, value in (("topic", topic), ("frame_id", frame_id), ("session", session)):
            if not isinstance(value, str):
                raise MemoryStoreError(f"add.{name}", f"must be a string, got {value!r}")
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
            raise MemoryStoreError("add.stamp_ns", f"must be integer nanoseconds, got {stamp_ns!r}")
        if pose is not None and not isinstance(pose, Pose):
            raise MemoryStoreError("add.pose", f"must be a Pose or None, got {type(pose).__name__}")
        return int(stamp_ns)

    def _insert_one(self, eid: int, code: int, stamp_ns: int, pose: Pose | None, topic: str, frame_id: str,
                    session: str, vec: np.ndarray) -> None:
        """Append one entry with id ``eid`` (under the write lock), journal it, remember it for admission."""
        p = None if pose is None else (pose.x, pose.y, pose.z, pose.qx, pose.qy, pose.qz, pose.qw)
        strings = self._strings
        self._cols.append_one((eid, code, stamp_ns, p if p is not None else (np.nan,) * 7, p is not None,
                               strings["topic"].get_or_add(topic), strings["frame"].get_or_add(frame_id),
                               strings["session"].get_or_add(session), True))
        self._add_vectors(vec[None, :])
        self._next_id = eid + 1
        if self._dir is not None:
            self._journal(persist.encode_add(eid, code, stamp_ns, p, topic, frame_id, session, vec))
        self._last_kept[(code, topic)] = (vec, pose)
        self._count["added"] += 1

    def _append(self, rows: dict[str, np.ndarray], vecs: np.ndarray) -> None:
        self._cols.append(rows)
        self._add_vectors(vecs)

    def _add_vectors(self, vecs: np.ndarray) -> None:
        """The vectors of the rows just appended to the columns: store, index, count."""
        self._store.append(vecs)
        self._index.add(vecs)
        self._n_alive += vecs.shape[0]

    def _search_slots(self, q, k, allowed, n_ok, want):
        index = self._index
        if not index.ready or (
            allowed is not None and index.approximate and n_ok <= self._config.index.filter_exact_below
        ):
            return exact_search(self._store.view(), q, k, allowed)
        effort = 1
        while True:
            scores, slots = index.search(q, k, allowed, effort)
            if slots.shape[0] >= want and min(slots[:want].tolist()) >= 0:
                return scores[:want], slots[:want]
            if not index.approximate or effort >= _MAX_EFFORT:
                break
            effort *= 4
            with self._stats_lock:
                self._count["search_retries"] += 1
        with self._stats_lock:
            self._count["exact_fallbacks"] += 1
        return exact_search(self._store.view(), q, k, allowed)

    def _entry_at(self, slot: int) -> MemoryEntry:
        return self._entries([slot])[0]

    def _entries(self, slots: list[int]) -> list[MemoryEntry]:
        """Entries of the given slots (one gather; vectors are read-only views into the store)."""
        meta = self._cols.meta[slots].tolist()
        t_items = self._strings["topic"].items
        f_items = self._strings["frame"].items
        s_items = self._strings["session"].items
        vecs = self._store.readonly()
        pose = self._cols.a["pose"]
        out = []
        for slot, (eid, mod, stamp, valid, topic, frame, session) in zip(slots, meta):
            out.append(
                MemoryEntry(
                    eid, MODALITIES[mod], t_items[topic], f_items[frame], stamp,
                    Pose(*pose[slot].tolist()) if valid else None, s_items[session], vecs[slot], self._robot,
                )
            )
        return out

    def _slot_of(self, entry_id: int) -> int | None:
        ids = self._cols.view("ids")
        slot = int(np.searchsorted(ids, entry_id))
        if slot < ids.shape[0] and ids[slot] == entry_id and self._cols.a["alive"][slot]:
            return slot
        return None

    def _make_room(self, m: int, code: int) -> bool:
        """Evict so that ``m`` more entries fit. False when the rule is 'reject' and there is no room. The evictions
        are journaled as one group with the ``m`` adds the caller journals right after them (``persist``: a crash
        that tears the adds drops the evictions too)."""
        cap = self._config.capacity
        if not cap.max_entries or self._n_alive + m <= cap.max_entries:
            return True
        if cap.eviction == "reject":
            return False
        need = self._n_alive + m - cap.max_entries
        if cap.eviction == "oldest_same_modality":
            slots = self._oldest_alive(need, code)
            self._kill(slots, adds=m)
            need -= len(slots)
        if need > 0:
            self._kill(self._oldest_alive(need, None), adds=m)
        return True

    def _oldest_alive(self, count: int, code: int | None) -> np.ndarray:
        alive = self._cols.a["alive"]
        mods = self._cols.a["modality"]
        n = self._cols.n
        pos = self._hint_all if code is None else self._hint_mod[code]
        found: list[np.ndarray] = []
        got = 0
        chunk = 4096
        while pos < n and got < count:
            end = min(n, pos + chunk)
            mask = alive[pos:end] if code is None else alive[pos:end] & (mods[pos:end] == code)
            idx = np.flatnonzero(mask)[: count - got] + pos
            found.append(idx)
            got += idx.shape[0]
            pos = end
            chunk *= 2
        slots = np.concatenate(found) if found else np.empty(0, np.int64)
        hint = int(slots[-1]) + 1 if got >= count and slots.shape[0] else n
        if code is None:
            self._hint_all = hint
        else:
            self._hint_mod[code] = hint
        self._count["evicted"] += int(slots.shape[0])
        return slots

    def _kill(self, slots: np.ndarray, adds: int = 0) -> None:
        """Mark ``slots`` deleted and journal it; ``adds`` > 0: an eviction making room for that many adds, which the
        caller journals right after (:meth:`_make_room`)."""
        if slots.shape[0] == 0:
            return
        self._cols.a["alive"][slots] = False
        self._n_alive -= int(slots.shape[0])
        self._n_dead += int(slots.shape[0])
        if self._dir is not None:
            ids = self._cols.a["ids"][slots]
            for i in range(0, ids.shape[0], _DELETE_CHUNK):
                chunk = ids[i : i + _DELETE_CHUNK]
                self._journal(persist.encode_evict(chunk, adds) if adds else persist.encode_delete(chunk))

    def _maybe_compact(self) -> None:
        n = self._cols.n
        if self._n_dead == 0 or self._n_dead <= self._config.index.compact_fraction * n:
            return
        keep = np.flatnonzero(self._cols.view("alive"))
        self._cols.replace({k: self._cols.view(k)[keep] for k in _Columns.SPEC})
        self._store.replace(self._store.view()[keep])
        self._index.rebuild()
        self._n_dead = 0
        self._hint_all = 0
        self._hint_mod = [0] * len(MODALITIES)
        self._count["compactions"] += 1

    # --- internals: journal and files ---------------------------------------------------------------------------

    def _journal(self, record: bytes, count: int = 1) -> None:
        with self._pending_lock:
            self._pending += record
            self._pending_records += count
        self._records_since_snapshot += count

    def _after_write(self) -> None:
        if self._dir is None:
            return
        p = self._config.persistence
        if p.snapshot_every_n and self._records_since_snapshot >= p.snapshot_every_n:
            self.snapshot()
        elif time.monotonic() - self._last_flush >= p.flush_interval_s:
            if self._io_lock.acquire(blocking=False):  # a snapshot in progress will flush anyway
                try:
                    self._flush_locked()
                finally:
                    self._io_lock.release()

    def _flush_locked(self) -> int:
        with self._pending_lock:
            data = bytes(self._pending)
            count = self._pending_records
            self._pending.clear()
            self._pending_records = 0
        try:
            if data:
                self._write_all(data)
            os.fsync(self._fd)
        except OSError as err:
            raise MemoryStoreError(str(self._dir), f"journal write failed, {count} records lost: {err}") from err
        self._last_flush = time.monotonic()
        with self._stats_lock:
            self._count["flushes"] += 1
        return count

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _snapshot_locked(self) -> None:
        assert self._dir is not None
        cfg = self._config
        with self._rw.read():  # the writer waits; readers go on
            n = self._cols.n
            arrays = {k: self._cols.view(k) for k in _Columns.SPEC}
            arrays["alive"] = arrays["alive"].copy()
            arrays["vectors"] = self._store.view()
            strings = {k: list(v.items) for k, v in self._strings.items()}
            next_id = self._next_id
            index_bytes = None
            if cfg.persistence.save_index and self._index.approximate and self._index.ready and n:
                index_bytes = self._index.serialize()
            with self._pending_lock:
                data = bytes(self._pending)
                self._pending.clear()
                self._pending_records = 0
            self._records_since_snapshot = 0
        try:
            if data:
                self._write_all(data)
            os.fsync(self._fd)
            old = persist.read_manifest(self._dir)
            gen = self._generation + 1
            snap_name = f"snapshot-{gen:06d}.npz"
            persist.write_snapshot(
                self._dir / snap_name, persist.Snapshot(arrays, strings, next_id, gen)
            )
            index_name = None
            if index_bytes is not None:
                index_name = f"index-{gen:06d}.faiss"
                persist.write_atomic(self._dir / index_name, lambda f: f.write(index_bytes.tobytes()))
            journal_name = f"journal-{gen:06d}.log"
            persist.write_atomic(self._dir / journal_name, lambda f: persist.write_journal_header(f, self._dim, gen))
            persist.write_manifest(
                self._dir,
                persist.Manifest(self._dim, gen, snap_name, journal_name, index_name,
                                 cfg.index.index_params() if index_name else {}),
            )
        except OSError as err:
            raise MemoryStoreError(str(self._dir), f"snapshot failed (the previous one is intact): {err}") from err
        fd = os.open(self._dir / journal_name, os.O_WRONLY | os.O_APPEND)
        os.close(self._fd)
        self._fd = fd
        self._generation = gen
        for name in (old.snapshot, old.index, old.journal):
            if name and name not in (snap_name, index_name, journal_name):
                try:
                    os.unlink(self._dir / name)
                except FileNotFoundError:
                    pass
        self._last_flush = time.monotonic()
        with self._stats_lock:
            self._count["snapshots"] += 1

    def _open_dir(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise MemoryStoreError(str(path), "is not a directory")
        empty = never_created(path)
        if empty and path.exists() and not self._read_only:
            # A creation killed before its first MANIFEST leaves only creation files (no entry was ever stored):
            # start afresh instead of refusing the folder for good.
            for p in path.iterdir():
                if p.name != "LOCK":
                    p.unlink()
        if empty:
            if self._read_only:
                raise MemoryStoreError(str(path), "no scene memory here (missing or empty directory)")
            path.mkdir(parents=True, exist_ok=True)
            self._dir = path
            self._lock()
            journal = "journal-000000.log"
            persist.write_atomic(path / journal, lambda f: persist.write_journal_header(f, self._dim, 0))
            persist.write_manifest(path, persist.Manifest(self._dim, 0, None, journal))
        else:
            if not (path / persist.MANIFEST).exists():
                raise MemoryStoreError(
                    str(path), f"has files but no {persist.MANIFEST}: not a scene memory; refusing to touch it"
                )
            manifest = persist.read_manifest(path)
            if manifest.dim != self._dim:
                raise MemoryStoreError(str(path), f"stored vectors have dim {manifest.dim}, config says {self._dim}")
            self._dir = path
            if not self._read_only and (path / "LOCK").exists():
                self._lock(create=False)  # before reading, so a live writer is detected
            try:
                snap = persist.read_snapshot(path / manifest.snapshot, self._dim, manifest.generation) \
                    if manifest.snapshot else None
                scan = persist.read_journal(path / manifest.journal, self._dim, manifest.generation)
                self._load(manifest, snap, scan)
                if not self._read_only and self._lock_fd is None:
                    self._lock()  # created only now that the directory proved valid: a damaged one stays untouched
            except BaseException:
                self._dir = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                raise
            self._generation = manifest.generation
            self._torn_bytes = scan.torn_bytes
            if not self._read_only:
                if scan.torn_bytes:
                    with open(path / manifest.journal, "r+b") as f:
                        f.truncate(scan.good_bytes)
                        f.flush()
                        os.fsync(f.fileno())
                keep = {manifest.snapshot, manifest.index, manifest.journal}
                for p in path.iterdir():
                    if p.name not in keep and _OWN_FILE.match(p.name):
                        p.unlink()
            journal = manifest.journal
        if not self._read_only:
            self._fd = os.open(path / journal, os.O_WRONLY | os.O_APPEND)

    def _lock(self, create: bool = True) -> None:
        assert self._dir is not None
        fd = os.open(self._dir / "LOCK", os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MemoryStoreError(str(self._dir), "is in use by another process (LOCK is held)") from None
        self._lock_fd = fd

    def _load(self, manifest: persist.Manifest, snap: persist.Snapshot | None, scan: persist.JournalScan) -> None:
        where = str(self._dir)
        last_id = 0
        if snap is not None:
            a = snap.arrays
            self._cols.replace({k: a[k] for k in _Columns.SPEC})
            self._store.replace(a["vectors"])
            self._strings = {k: _Strings(v) for k, v in snap.strings.items()}
            self._next_id = snap.next_id
            self._n_alive = int(a["alive"].sum())
            self._n_dead = int(a["ids"].shape[0]) - self._n_alive
            if a["ids"].shape[0]:
                last_id = int(a["ids"][-1])
            loaded = False
            if manifest.index and manifest.index_params == self._config.index.index_params():
                try:
                    data = np.fromfile(self._dir / manifest.index, dtype=np.uint8)
                    loaded = self._index.load(data)
                except (OSError, RuntimeError):
                    loaded = False
            if not loaded:
                self._index.rebuild()
            self._index_loaded = loaded
        adds = [op for op in scan.ops if isinstance(op, persist.JournalAdd)]
        if adds:
            ids = np.array([op.id for op in adds], np.int64)
            if ids[0] <= last_id or (np.diff(ids) <= 0).any():
                raise MemoryStoreError(where, "journal ids are not increasing after the snapshot's")
            if any(op.modality_code >= len(MODALITIES) for op in adds):
                raise MemoryStoreError(where, "journal has an unknown modality code")
            vecs = np.stack([op.vector for op in adds])
            rows = {
                "ids": ids,
                "modality": np.array([op.modality_code for op in adds], np.uint8),
                "stamp_ns": np.array([op.stamp_ns for op in adds], np.int64),
                "pose": np.array([op.pose if op.pose is not None else (np.nan,) * 7 for op in adds], np.float64),
                "pose_valid": np.array([op.pose is not None for op in adds]),
                "topic": np.array([self._strings["topic"].get_or_add(op.topic) for op in adds], np.int32),
                "frame": np.array([self._strings["frame"].get_or_add(op.frame_id) for op in adds], np.int32),
                "session": np.array([self._strings["session"].get_or_add(op.session) for op in adds], np.int32),
                "alive": np.ones(len(adds), bool),
            }
            self._append(rows, vecs)
            self._next_id = max(self._next_id, int(ids[-1]) + 1)
        saved_dir, self._dir = self._dir, None  # replayed deletes must not be journaled again
        try:
            for op in scan.ops:
                if isinstance(op, persist.JournalDelete):
                    all_ids = self._cols.view("ids")
                    slots = np.searchsorted(all_ids, op.ids)
                    ok = (slots < all_ids.shape[0])
                    ok[ok] &= all_ids[slots[ok]] == op.ids[ok]
                    if not ok.all() or not self._cols.a["alive"][slots].all():
                        raise MemoryStoreError(where, "journal deletes an entry that does not exist")
                    self._kill(slots)
            self._maybe_compact()
        finally:
            self._dir = saved_dir
        self._records_since_snapshot = len(scan.ops)
        # admission state: the newest live entry of each (modality, topic)
        alive = np.flatnonzero(self._cols.view("alive"))
        if alive.shape[0]:
            keys = self._cols.view("modality")[alive].astype(np.int64) << 32 | self._cols.view("topic")[alive]
            _, first_from_end = np.unique(keys[::-1], return_index=True)
            for slot in alive[::-1][first_from_end]:
                e = self._entry_at(int(slot))
                self._last_kept[(_CODE[e.modality], e.topic)] = (np.array(e.vector), e.pose)
