"""Vector index backends behind one interface, and the growable vector store they share.

Every backend addresses vectors by *slot*: the row number in :class:`VectorStore`, in insertion order. The scene
memory maps slots to entry ids and metadata. Removal is by tombstone (the memory passes a mask of allowed slots) and
compaction (the memory rebuilds store and index from the live rows), because HNSW cannot remove vectors.

Scores are inner products of unit vectors, i.e. cosine similarities. A backend may return fewer than ``k`` hits
(slot -1) when an approximate search with a filter runs dry; the memory then retries with more effort and finally
answers exactly over the filtered subset, so callers never get a silently short list.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from cmr_fusion_ros.core.errors import MemoryStoreError
from cmr_fusion_ros.core.memory.config import IndexConfig

__all__ = [
    "INDEX_BACKENDS",
    "ExactIndex",
    "FaissFlatIndex",
    "FaissHnswIndex",
    "FaissIvfIndex",
    "VectorIndex",
    "VectorStore",
    "exact_search",
    "make_index",
]


class VectorStore:
    """A growable (n, dim) float32 array. Rows, once written, are never modified in place (growth and compaction
    allocate new arrays), so a view handed to a reader stays valid and correct."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._data = np.empty((max(capacity, 16), dim), dtype=np.float32)
        self._ro = self._readonly_view()
        self.n = 0

    def _readonly_view(self) -> np.ndarray:
        ro = self._data.view()
        ro.flags.writeable = False
        return ro

    def readonly(self) -> np.ndarray:
        """A read-only view of the whole buffer (rows < n are valid); rows taken from it are read-only too."""
        return self._ro

    def append(self, rows: np.ndarray) -> None:
        m = rows.shape[0]
        if self.n + m > self._data.shape[0]:
            new = np.empty((max(2 * self._data.shape[0], self.n + m), self.dim), dtype=np.float32)
            new[: self.n] = self._data[: self.n]
            self._data = new
            self._ro = self._readonly_view()
        self._data[self.n : self.n + m] = rows
        self.n += m

    def view(self) -> np.ndarray:
        return self._data[: self.n]

    def replace(self, rows: np.ndarray) -> None:
        self._data = np.array(rows, dtype=np.float32, order="C", copy=True)
        if self._data.shape[0] == 0:
            self._data = np.empty((16, self.dim), dtype=np.float32)
        self._ro = self._readonly_view()
        self.n = rows.shape[0]


def exact_search(vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product over ``vectors`` (rows where ``allowed`` is False are skipped).

    Returns (scores, slots), both of length ``min(k, number of allowed rows)``, best first; ties broken by slot.
    """
    if vectors.shape[0] == 0 or k <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    idx = np.flatnonzero(allowed[: vectors.shape[0]]) if allowed is not None else None
    return _top_k(vectors @ query, k, idx)


def exact_search_many(
    vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`exact_search` for each row of ``queries`` (Q, D) with one matrix product and one filter."""
    if vectors.shape[0] == 0 or k <= 0:
        return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in range(queries.shape[0])]
    idx = np.flatnonzero(allowed[: vectors.shape[0]]) if allowed is not None else None
    scores = vectors @ queries.T  # (N, Q)
    return [_top_k(scores[:, j], k, idx) for j in range(queries.shape[0])]


def _top_k(scores: np.ndarray, k: int, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``scores`` (one per store row) among rows ``idx`` (None: all), best first, ties by slot."""
    if idx is not None:
        scores = scores[idx]
    kk = min(k, scores.shape[0])
    if kk == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    if kk < scores.shape[0]:
        part = np.argpartition(-scores, kk - 1)[:kk]
    else:
        part = np.arange(scores.shape[0])
    order = part[np.lexsort((part, -scores[part]))]
    slots = order if idx is None else idx[order]
    return scores[order].astype(np.float32), slots.astype(np.int64)


class VectorIndex(Protocol):
    """What the scene memory needs from an index backend."""

    name: str
    approximate: bool

    @property
    def ready(self) -> bool:
        """False while the index cannot answer (IVF before training); the memory then searches exactly."""

    def add(self, rows: np.ndarray) -> None:
        """Index ``rows``, already appended to the store, at the next slots."""

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, effort: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, slots) for one unit query; slot -1 pads a short answer. ``effort`` > 1 widens the search."""

    def rebuild(self) -> None:
        """Drop everything and index the whole store again (after compaction)."""

    def serialize(self) -> np.ndarray | None:
        """The index as bytes (uint8 array), or None when there is nothing worth saving."""

    def load(self, data: np.ndarray) -> bool:
        """Replace the index by a serialized one matching the store; False when it does not match."""


class ExactIndex:
    """Brute force over the store with numpy; exact, no dependency, the embedded default."""

    name = "exact"
    approximate = False

    def __init__(self, store: VectorStore, config: IndexConfig) -> None:
        self._store = store

    @property
    def ready(self) -> bool:
        return True

    def add(self, rows: np.ndarray) -> None:
        pass

    def search(self, query, k, allowed, effort=1):
        return exact_search(self._store.view(), query, k, allowed)

    def rebuild(self) -> None:
        pass

    def serialize(self):
        return None

    def load(self, data) -> bool:
        return True


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise MemoryStoreError("index", f"the FAISS backends need faiss-cpu: {err}") from err
    return faiss


def _selector(faiss, allowed: np.ndarray):
    bits = np.packbits(allowed.astype(bool), bitorder="little")
    sel = faiss.IDSelectorBitmap(bits.shape[0], faiss.swig_ptr(bits))
    return sel, bits  # bits must outlive the search


class _FaissBase:
    name = "faiss"
    approximate = True

    def __init__(self, store: VectorStore, config: IndexConfig) -> None:
        self._faiss = _faiss()
        self._store = store
        self._config = config
        if config.faiss_threads:
            self._faiss.omp_set_num_threads(config.faiss_threads)
        self._index = self._new_index()

    def _new_index(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self, sel, effort: int):
        params = self._faiss.SearchParameters()
        params.sel = sel
        return params

    @property
    def ready(self) -> bool:
        return True

    @property
    def raw(self):
        """The FAISS index itself (for benchmarks and diagnostics)."""
        return self._index

    def add(self, rows: np.ndarray) -> None:
        if rows.shape[0]:
            self._index.add(rows)

    def search(self, query, k, allowed, effort=1):
        q = query.reshape(1, -1)
        ntotal = self._index.ntotal
        if k > ntotal:
            k = max(ntotal, 1)
        if allowed is None and effort == 1:
            scores, slots = self._index.search(q, k)
        else:
            sel, bits = _selector(self._faiss, allowed) if allowed is not None else (None, None)
            scores, slots = self._index.search(q, k, params=self._params(sel, effort))
            del bits
        return scores[0], slots[0]

    def rebuild(self) -> None:
        self._index = self._new_index()
        self.add(self._store.view())

    def serialize(self):
        return self._faiss.serialize_index(self._index)

    def load(self, data) -> bool:
        index = self._faiss.deserialize_index(np.asarray(data, dtype=np.uint8))
        if index.ntotal != self._store.n or index.d != self._store.dim:
            return False
        self._index = index
        self._configure_loaded()
        return True

    def _configure_loaded(self) -> None:
        pass


class FaissFlatIndex(_FaissBase):
    """FAISS IndexFlatIP: exact, multi-threaded BLAS."""

    name = "faiss_flat"
    approximate = False

    def _new_index(self):
        return self._faiss.IndexFlatIP(self._store.dim)


class FaissHnswIndex(_FaissBase):
    """FAISS IndexHNSWFlat with inner product; ``effort`` multiplies efSearch."""

    name = "faiss_hnsw"

    def _new_index(self):
        f = self._faiss
        index = f.IndexHNSWFlat(self._store.dim, self._config.hnsw_m, f.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self._config.hnsw_ef_construction
        index.hnsw.efSearch = self._config.hnsw_ef_search
        return index

    def _configure_loaded(self) -> None:
        self._index.hnsw.efSearch = self._config.hnsw_ef_search

    def _params(self, sel, effort):
        params = self._faiss.SearchParametersHNSW()
        if sel is not None:
            params.sel = sel
        params.efSearch = self._config.hnsw_ef_search * effort
        return params


class FaissIvfIndex(_FaissBase):
    """FAISS IndexIVFFlat with inner product. Not ready until the store holds ``effective_train_size`` vectors; it is
    then trained on them and fills itself with the whole store. ``effort`` multiplies nprobe."""

    name = "faiss_ivf"

    def _new_index(self):
        f = self._faiss
        self._quantizer = f.IndexFlatIP(self._store.dim)
        index = f.IndexIVFFlat(self._quantizer, self._store.dim, self._config.ivf_nlist, f.METRIC_INNER_PRODUCT)
        index.nprobe = self._config.ivf_nprobe
        return index

    @property
    def ready(self) -> bool:
        return bool(self._index.is_trained)

    def add(self, rows: np.ndarray) -> None:
        if self._index.is_trained:
            super().add(rows)
        elif self._store.n >= max(self._config.effective_train_size, self._config.ivf_nlist):
            self._train_and_fill()

    def _train_and_fill(self) -> None:
        data = self._store.view()
        limit = 256 * self._config.ivf_nlist
        if data.shape[0] > limit:
            rng = np.random.default_rng(0)
            sample = data[np.sort(rng.choice(data.shape[0], limit, replace=False))]
        else:
            sample = data
        self._index.train(np.ascontiguousarray(sample))
        self._index.add(data)

    def rebuild(self) -> None:
        self._index = self._new_index()
        if self._store.n >= max(self._config.effective_train_size, self._config.ivf_nlist):
            self._train_and_fill()

    def _configure_loaded(self) -> None:
        self._index.nprobe = self._config.ivf_nprobe

    def _params(self, sel, effort):
        params = self._faiss.SearchParametersIVF()
        if sel is not None:
            params.sel = sel
        params.nprobe = min(self._config.ivf_nprobe * effort, self._config.ivf_nlist)
        return params


INDEX_BACKENDS: dict[str, Callable[[VectorStore, IndexConfig], VectorIndex]] = {
    "exact": ExactIndex,
    "faiss_flat": FaissFlatIndex,
    "faiss_hnsw": FaissHnswIndex,
    "faiss_ivf": FaissIvfIndex,
}


def make_index(store: VectorStore, config: IndexConfig) -> VectorIndex:
    try:
        factory = INDEX_BACKENDS[config.backend]
    except KeyError:
        raise MemoryStoreError("index", f"unknown backend {config.backend!r}") from None
    return factory(store, config)
