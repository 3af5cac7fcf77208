"""Calls run ahead in worker threads, one thread per key, each key's calls in the order they were submitted (no ROS).

Offline processing decodes and embeds each stream's frames ahead of its in-order commits
(:func:`cmr_fusion_ros.bag.offline.process_bags`, ``--look-ahead``): the calls of one stream keep their order (a
route's multi-scan history needs it), different streams run side by side (onnxruntime, OpenCV and numpy release the
GIL). With ``threads=False`` every call runs at once in the caller's thread: the same steps in the same order, and
the same :class:`~concurrent.futures.Future` to take the result from.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["KeyedWorkers"]

T = TypeVar("T")


class KeyedWorkers:
    """One worker thread per key, made on the key's first call; ``close`` (or leaving the ``with`` block) waits for
    the calls running, and drops those not started when ``cancel`` (or the block raised)."""

    def __init__(self, threads: bool = True, *, name: str = "worker") -> None:
        self.threads = threads
        self.name = name
        self._pools: dict[Hashable, ThreadPoolExecutor] = {}
        self._closed = False

    def submit(self, key: Hashable, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` after the calls submitted earlier with ``key``; its result (or error) in the future."""
        if self._closed:
            raise RuntimeError("KeyedWorkers.submit after close")
        if self.threads:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-{len(self._pools)}")
            return pool.submit(fn, *args)
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as err:  # handed to the caller through the future, as a worker thread would
            done.set_exception(err)
        return done

    @property
    def keys(self) -> list[Hashable]:
        """The keys that have a worker thread (none without threads)."""
        return list(self._pools)

    def close(self, *, cancel: bool = False) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> "KeyedWorkers":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)
