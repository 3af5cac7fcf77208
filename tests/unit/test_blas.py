"""core.blas: BLAS held to n threads inside a block and restored after; the OpenBLAS libraries found in the maps."""

from __future__ import annotations

import numpy as np

from cmr_fusion_ros.core import blas


def test_openblas_libraries_from_a_maps_file(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libc.so.6\n"
        "7f02-7f03 r-xp 00000000 08:01 2 /site/numpy.libs/libscipy_openblas64_-abc.so\n"
        "7f03-7f04 r--p 00001000 08:01 2 /site/numpy.libs/libscipy_openblas64_-abc.so\n"
        "7f05-7f06 rw-p 00000000 00:00 0 \n"
        "7f07-7f08 r-xp 00000000 08:01 3 /opt/lib/libopenblasp-r0.3.so.0\n")
    assert blas.openblas_libraries(maps) == ["/site/numpy.libs/libscipy_openblas64_-abc.so",
                                             "/opt/lib/libopenblasp-r0.3.so.0"]
    assert blas.openblas_libraries(tmp_path / "none") == []


def test_blas_threads_limits_inside_and_restores_after():
    np.ones((4, 4)) @ np.ones(4)  # numpy (and its BLAS) loaded
    controls = blas._openblas_controls()
    before = [get() for get, _ in controls]
    a = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    q = a[3]
    with blas.blas_threads(1) as how:
        assert how in ("threadpoolctl", "openblas", "unchanged")
        if how == "openblas":
            assert [get() for get, _ in controls] == [1] * len(controls)
        inside = a @ q
    assert [get() for get, _ in controls] == before
    np.testing.assert_array_equal(inside, a @ q)  # one row per thread: the same products
