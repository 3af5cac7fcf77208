"""numpy's BLAS on a given number of threads while a block runs (no ROS).

Offline processing keeps BLAS on one thread: its work is many small products (a query against the memory, points
turned to a LiDAR view) run from several threads at once, where a second BLAS thread only spins against the other
stages (the exact search's product took 4 ms with two BLAS threads on a loaded 2-core machine, 0.2 ms with one).

Three ways, the first that applies: ``threadpoolctl`` when installed; else the ``openblas_set_num_threads`` of every
OpenBLAS loaded in this process (numpy's wheels bundle one; Linux, found in ``/proc/self/maps``); else, when numpy
is not imported yet, ``OPENBLAS_NUM_THREADS`` and friends, which BLAS reads once when it loads (they stay set).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["BLAS_ENV", "blas_threads", "openblas_libraries"]

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
# (get, set) of OpenBLAS builds: scipy-openblas (numpy's wheels, 64-bit ints), other 64-bit builds, the plain one
_OPENBLAS_CALLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                   ("openblas_get_num_threads", "openblas_set_num_threads"))


def openblas_libraries(maps: str | Path = "/proc/self/maps") -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process, in order of first appearance ([] where
    ``maps`` cannot be read)."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return []
    found: dict[str, None] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        path = parts[5] if len(parts) == 6 else ""
        if "openblas" in os.path.basename(path).lower() and ".so" in path:
            found[path] = None
    return list(found)


def _openblas_controls() -> list[tuple[Any, Any]]:
    """(get, set) thread-count calls of each OpenBLAS loaded."""
    out = []
    for path in openblas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_CALLS:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                get, put = getattr(lib, get_name), getattr(lib, set_name)
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                out.append((get, put))
                break
    return out


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[str]:
    """BLAS limited to ``n`` threads inside the block, the former counts restored after; yields how
    (``threadpoolctl``, ``openblas``, ``environment`` or ``unchanged``: no way applied)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=n, user_api="blas"):
            yield "threadpoolctl"
        return
    controls = _openblas_controls()
    if controls:
        before = [get() for get, _ in controls]
        for _, put in controls:
            put(n)
        try:
            yield "openblas"
        finally:
            for (_, put), count in zip(controls, before):
                put(count)
        return
    if "numpy" not in sys.modules:
        for key in BLAS_ENV:
            os.environ.setdefault(key, str(n))
        yield "environment"
        return
    yield "unchanged"
