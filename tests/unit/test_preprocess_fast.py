"""The fast LiDAR / radar grids return bit-identical tensors to the original (slow) algorithm.

Shipped ONNX models were trained on exactly these tensors, so every value must match (``np.array_equal``, float32),
ties and borders included. ``_ref_*`` below is the implementation as it was before the speed-up, frozen here: do not
"fix" or modernise it, it is the specification.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cmr_fusion_ros.core.errors import ConversionError
from cmr_fusion_ros.core.preprocess import (
    LidarBevFrontPreprocessing,
    LidarBevPreprocessing,
    RadarBevPreprocessing,
    _columns,
    points_columns,
)

# --------------------------------------------------------------------------------------------------------------------
# Frozen reference: the original implementation, verbatim apart from being free functions of the parameter object.
# --------------------------------------------------------------------------------------------------------------------


def _ref_points_columns(data, names, *, required, what):
    if data.dtype.names is not None:
        n = data.shape[0] if data.ndim else 0
        out = np.zeros((n, len(names)), dtype=np.float32)
        for i, name in enumerate(names):
            if name in data.dtype.names:
                out[:, i] = data[name].reshape(-1)
            elif i < required:
                raise ConversionError(what, name, f"field missing; the cloud has fields {list(data.dtype.names)}")
        return out
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] < required:
        raise ConversionError(what, "points", f"expected an (N, >={required}) array, got shape {arr.shape}")
    out = np.zeros((arr.shape[0], len(names)), dtype=np.float32)
    k = min(arr.shape[1], len(names))
    out[:, :k] = arr[:, :k]
    return out


def _ref_bev_indices(xy, x_min, x_max, y_half, rows, cols):
    row = np.floor((x_max - xy[:, 0]) * (rows / (x_max - x_min))).astype(np.int64)
    col = np.floor((y_half - xy[:, 1]) * (cols / (2.0 * y_half))).astype(np.int64)
    keep = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    return row[keep] * cols + col[keep], keep


def _ref_lidar_bev(self: LidarBevPreprocessing, cloud) -> np.ndarray:
    pts = _ref_points_columns(cloud, ("x", "y", "z", "intensity"), required=3, what="lidar cloud")
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts = pts[(pts[:, 2] >= self.z_min_m) & (pts[:, 2] <= self.z_max_m)]
    n = self.rows * self.cols
    idx, keep = _ref_bev_indices(pts[:, :2], self.x_min_m, self.x_max_m, self.y_half_m, self.rows, self.cols)
    pts = pts[keep]
    count = np.bincount(idx, minlength=n).astype(np.float32)
    height = np.zeros(n, dtype=np.float32)
    zn = np.clip((pts[:, 2] - self.z_min_m) / (self.z_max_m - self.z_min_m), 0.0, 1.0).astype(np.float32)
    np.maximum.at(height, idx, zn)
    inten = np.bincount(idx, weights=pts[:, 3], minlength=n).astype(np.float32)
    occupied = count > 0
    inten[occupied] /= count[occupied] * np.float32(self.intensity_scale)
    occ = np.minimum(np.log1p(count) / np.float32(math.log1p(self.count_scale)), 1.0).astype(np.float32)
    out = np.stack([occ, height, inten]).reshape(3, self.rows, self.cols)
    return np.ascontiguousarray(out, dtype=np.float32)


def _ref_front_view(self: LidarBevFrontPreprocessing, pts) -> np.ndarray:
    rows, cols = self.fv_rows, self.fv_cols
    out = np.zeros((3, rows * cols), dtype=np.float32)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    front = x > 0.1
    pts, x, y, z = pts[front], x[front], y[front], z[front]
    rng = np.sqrt(x * x + y * y + z * z)
    half = math.tan(math.radians(self.fv_hfov_deg) / 2.0)
    col = np.floor((0.5 - (y / x) / (2.0 * half)) * cols).astype(np.int64)
    elev = np.degrees(np.arctan2(z, np.sqrt(x * x + y * y)))
    span = self.fv_elev_max_deg - self.fv_elev_min_deg
    row = np.floor((self.fv_elev_max_deg - elev) / span * rows).astype(np.int64)
    keep = (col >= 0) & (col < cols) & (row >= 0) & (row < rows) & (rng < self.fv_max_range_m)
    if not keep.any():
        return out.reshape(3, rows, cols)
    pix = row[keep] * cols + col[keep]
    r, zz, inten = rng[keep], z[keep], pts[keep, 3]
    order = np.lexsort((r, pix))  # by pixel, then nearest first
    pix_sorted = pix[order]
    first = np.ones(len(order), bool)
    first[1:] = pix_sorted[1:] != pix_sorted[:-1]
    sel = order[first]
    out[0, pix[sel]] = 1.0 - r[sel] / self.fv_max_range_m
    out[1, pix[sel]] = np.clip((zz[sel] - self.z_min_m) / (self.z_max_m - self.z_min_m), 0.0, 1.0)
    out[2, pix[sel]] = np.clip(inten[sel] / self.intensity_scale, 0.0, None)
    return out.reshape(3, rows, cols)


def _ref_lidar_bev_front(self: LidarBevFrontPreprocessing, cloud) -> np.ndarray:
    pts = _ref_points_columns(cloud, ("x", "y", "z", "intensity"), required=3, what="lidar cloud")
    pts = pts[np.isfinite(pts).all(axis=1)]
    bev = _ref_lidar_bev(self._bev(), pts)
    fv = np.repeat(_ref_front_view(self, pts), self.rows // self.fv_rows, axis=1)
    return np.ascontiguousarray(np.concatenate([bev, fv], axis=2), dtype=np.float32)


def _ref_radar_bev(self: RadarBevPreprocessing, cloud) -> np.ndarray:
    pts = _ref_points_columns(cloud, ("x", "y", "z", "doppler", "rcs"), required=5, what="radar cloud")
    pts = pts[np.isfinite(pts).all(axis=1)]
    n = self.rows * self.cols
    idx, keep = _ref_bev_indices(pts[:, :2], self.x_min_m, self.x_max_m, self.y_half_m, self.rows, self.cols)
    pts = pts[keep]
    count = np.bincount(idx, minlength=n).astype(np.float32)
    dop = np.bincount(idx, weights=pts[:, 3], minlength=n).astype(np.float32)
    occupied = count > 0
    dop[occupied] /= count[occupied] * np.float32(self.doppler_scale_mps)
    dop = np.clip(dop, -1.0, 1.0)
    rcs = np.zeros(n, dtype=np.float32)
    rn = np.clip((pts[:, 4] - self.rcs_min_dbsm) / (self.rcs_max_dbsm - self.rcs_min_dbsm), 0.0, 1.0)
    np.maximum.at(rcs, idx, rn.astype(np.float32))
    occ = np.minimum(np.log1p(count) / np.float32(math.log1p(self.count_scale)), 1.0).astype(np.float32)
    out = np.stack([occ, dop, rcs]).reshape(3, self.rows, self.cols)
    return np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------

FRONT = LidarBevFrontPreprocessing()
BEV = LidarBevPreprocessing()
RADAR = RadarBevPreprocessing()
# small grids: many points per cell / pixel, so ties and borders are frequent
FRONT_SMALL = LidarBevFrontPreprocessing(rows=8, half_extent_m=8.0, z_min_m=-2.0, z_max_m=2.0, fv_cols=4, fv_rows=4,
                                         fv_hfov_deg=90.0, fv_elev_min_deg=-45.0, fv_elev_max_deg=45.0,
                                         fv_max_range_m=20.0)
BEV_SMALL = LidarBevPreprocessing(rows=4, cols=4, x_min_m=-4, x_max_m=4, y_half_m=4, z_min_m=0, z_max_m=4,
                                  count_scale=3.0, intensity_scale=10.0)
RADAR_SMALL = RadarBevPreprocessing(rows=4, cols=8, x_min_m=0.0, x_max_m=8.0, y_half_m=8.0)
# parameters given as numpy float64 scalars (a float subclass) promote differently from Python floats: the new code
# must promote exactly like the old one
FRONT_NP64 = LidarBevFrontPreprocessing(rows=16, half_extent_m=np.float64(10.0), z_min_m=np.float64(-2.5),
                                        z_max_m=np.float64(3.0), count_scale=np.float64(7.0), fv_cols=16, fv_rows=8,
                                        fv_hfov_deg=np.float64(100.0), fv_elev_min_deg=np.float64(-30.0),
                                        fv_elev_max_deg=np.float64(10.0), fv_max_range_m=np.float64(30.0))
BEV_INT = LidarBevPreprocessing(rows=10, cols=12, x_min_m=-5, x_max_m=7, y_half_m=3, z_min_m=-1, z_max_m=2,
                                count_scale=2, intensity_scale=100)
RADAR_NP64 = RadarBevPreprocessing(rows=8, cols=8, x_min_m=np.float64(0.0), x_max_m=np.float64(16.0),
                                   y_half_m=np.float64(8.0), rcs_min_dbsm=np.float64(-10.0))
LIDARS = [FRONT, FRONT_SMALL, FRONT_NP64, BEV, BEV_SMALL, BEV_INT]
RADARS = [RADAR, RADAR_SMALL, RADAR_NP64]

LIDAR_DT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])


def _ref(pre, cloud):
    if isinstance(pre, LidarBevFrontPreprocessing):
        return _ref_lidar_bev_front(pre, cloud)
    if isinstance(pre, LidarBevPreprocessing):
        return _ref_lidar_bev(pre, cloud)
    return _ref_radar_bev(pre, cloud)


def _run(fn, *args):
    """``fn(*args)`` and the set of (category, message) of the warnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, {(w.category, str(w.message)) for w in caught}


def _assert_same(pre, cloud) -> None:
    before = cloud.copy()
    want, want_warn = _run(_ref, pre, cloud)
    got, got_warn = _run(pre, cloud)
    assert got_warn == want_warn  # same numeric warnings (overflow in casts of extreme inputs, ...)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == pre.input_shape
    assert want.dtype == np.float32 and want.shape == got.shape
    assert np.array_equal(got, want), f"{int((got != want).sum())} values differ"
    # same bits, not only same values (np.array_equal treats -0.0 == 0.0)
    assert got.tobytes() == want.tobytes()
    for name in cloud.dtype.names or (None,):  # the input is not modified (field by field: views have padding)
        a, b = (cloud, before) if name is None else (cloud[name], before[name])
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _assert_front_view_same(pre: LidarBevFrontPreprocessing, pts: np.ndarray) -> None:
    want, want_warn = _run(_ref_front_view, pre, pts)
    got, got_warn = _run(pre.front_view, pts)
    assert got_warn == want_warn
    assert got.dtype == np.float32 and got.shape == want.shape == (3, pre.fv_rows, pre.fv_cols)
    assert got.tobytes() == want.tobytes()


def _structured(pts: np.ndarray, names=("x", "y", "z", "intensity"), dtype="<f4") -> np.ndarray:
    out = np.zeros(len(pts), np.dtype([(n, dtype) for n in names]))
    for i, n in enumerate(names):
        out[n] = pts[:, i]
    return out


def _scan(seed: int = 0, beams: int = 32, columns: int = 1024) -> np.ndarray:
    """A simulated-like spinning-LiDAR scan (like ``sim.sensors.LidarModel``): ground, walls, noise, dropouts."""
    rng = np.random.default_rng(seed)
    el = np.radians(np.linspace(-25.0, 15.0, beams))
    az = np.linspace(np.pi, -np.pi, columns, endpoint=False)
    a, e = np.meshgrid(az, el, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3).astype(np.float32)
    ground = np.where(d[:, 2] < -1e-3, 1.9 / np.maximum(-d[:, 2], 1e-3), np.inf)
    wall = rng.uniform(3.0, 95.0, len(d))
    wall[rng.random(len(d)) < 0.2] = np.inf  # sky
    r = np.minimum(ground, wall)
    valid = (r >= 1.0) & (r <= 100.0) & (rng.random(len(d)) >= 0.02)
    d, r = d[valid], r[valid].astype(np.float32) + rng.normal(0.0, 0.02, int(valid.sum())).astype(np.float32)
    out = np.empty(len(d), LIDAR_DT)
    out["x"], out["y"], out["z"] = (d * r[:, None]).T
    out["intensity"] = np.clip(rng.normal(120.0, 60.0, len(d)), 0, 255)
    out["ring"] = np.broadcast_to(np.arange(beams, dtype=np.uint16), (columns, beams)).reshape(-1)[valid]
    return out


def _random_cloud(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.uniform(-50, 50, (n, 2)), rng.uniform(-4, 10, (n, 1)), rng.uniform(-10, 300, (n, 1))], 1
    ).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Realistic and large inputs
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pre", LIDARS, ids=lambda p: type(p).__name__)
def test_simulated_scan_structured_and_plain(pre) -> None:
    scan = _scan(seed=3)
    assert len(scan) > 20_000
    _assert_same(pre, scan)
    _assert_same(pre, scan[["x", "y", "z"]])  # no intensity field
    plain = np.stack([scan["x"], scan["y"], scan["z"], scan["intensity"], scan["ring"]], 1)
    for k in (3, 4, 5):
        _assert_same(pre, np.ascontiguousarray(plain[:, :k]))
    _assert_same(pre, plain[:, :4].astype(np.float64))
    _assert_same(pre, np.asfortranarray(plain[:, :4]))
    _assert_same(pre, _structured(plain[:, :4].astype(np.float64), dtype="<f8"))


@pytest.mark.parametrize("pre", LIDARS, ids=lambda p: type(p).__name__)
def test_random_100k_cloud(pre) -> None:
    cloud = _random_cloud(100_000)
    _assert_same(pre, cloud)
    cloud64 = _random_cloud(100_000, seed=2).astype(np.float64) * 1.0000001  # values that round when cast
    _assert_same(pre, cloud64)


def test_front_view_method_direct() -> None:
    pts = _random_cloud(20_000, seed=5)
    for pre in (FRONT, FRONT_SMALL, FRONT_NP64):
        _assert_front_view_same(pre, pts)
        _assert_front_view_same(pre, pts.astype(np.float64))
        _assert_front_view_same(pre, pts[:0])
        bad = pts.copy()
        bad[::7, 0] = np.nan
        bad[::11, 1] = np.inf
        bad[::13, 2] = -np.inf
        bad[::17, 0] = np.inf
        _assert_front_view_same(pre, bad)


@pytest.mark.parametrize("pre", RADARS, ids=lambda p: type(p).__name__)
def test_radar_random_structured_and_plain(pre) -> None:
    rng = np.random.default_rng(4)
    n = 5000
    pts = np.stack([rng.uniform(-2, 50, n), rng.uniform(-45, 45, n), rng.uniform(-3, 3, n), rng.normal(0, 25, n),
                    rng.uniform(-40, 50, n)], 1).astype(np.float32)
    pts[::97, 3] = np.nan
    pts[::89, 4] = np.inf
    _assert_same(pre, pts)
    _assert_same(pre, pts.astype(np.float64))
    _assert_same(pre, np.concatenate([pts, np.ones((n, 2), np.float32)], 1))  # extra columns ignored
    _assert_same(pre, _structured(pts, ("x", "y", "z", "doppler", "rcs")))
    _assert_same(pre, _structured(pts, ("rcs", "doppler", "x", "y", "z")[::-1]))  # field order irrelevant


# --------------------------------------------------------------------------------------------------------------------
# Adversarial: empty, non-finite, borders, ties
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pre", LIDARS + RADARS, ids=lambda p: type(p).__name__)
def test_empty_and_all_dropped(pre) -> None:
    ncol = 5 if isinstance(pre, RadarBevPreprocessing) else 4
    _assert_same(pre, np.zeros((0, ncol), np.float32))
    _assert_same(pre, np.zeros((0, 5), np.float64))
    names = ("x", "y", "z", "doppler", "rcs") if ncol == 5 else ("x", "y", "z", "intensity")
    _assert_same(pre, _structured(np.zeros((0, ncol)), names))
    _assert_same(pre, np.full((10, ncol), np.nan, np.float32))
    _assert_same(pre, np.full((10, ncol), -np.inf, np.float32))
    far = np.full((10, ncol), 1e6, np.float32)
    _assert_same(pre, far)
    behind = np.tile(np.array([[-5.0, 0.0, 0.0, 1.0, 1.0][:ncol]], np.float32), (10, 1))
    _assert_same(pre, behind)
    if ncol == 4:
        _assert_same(pre, np.zeros((0, 3), np.float32))
        _assert_same(pre, _structured(np.zeros((0, 3)), ("x", "y", "z")))


@pytest.mark.parametrize("pre", LIDARS + RADARS, ids=lambda p: type(p).__name__)
def test_non_finite_rows_and_extremes(pre) -> None:
    ncol = 5 if isinstance(pre, RadarBevPreprocessing) else 4
    rng = np.random.default_rng(6)
    pts = rng.uniform(-12, 12, (4000, ncol)).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.1, 1e-30, -1e-30, 3e38, -3e38, 1e20, -1e20],
                        np.float32)
    mask = rng.random(pts.shape) < 0.08
    pts[mask] = rng.choice(specials, int(mask.sum()))
    _assert_same(pre, pts)
    _assert_same(pre, pts.astype(np.float64))
    _assert_same(pre, pts.astype(np.float64) * 1e10)  # overflows to inf when cast to float32


def _borders(lo: float, hi: float, cells: int) -> np.ndarray:
    """Every cell border of [lo, hi) split in ``cells`` plus its float32 neighbours."""
    b = np.linspace(lo, hi, cells + 1).astype(np.float32)
    b = np.concatenate([b, np.float32(lo) + np.arange(cells + 1, dtype=np.float32) * np.float32((hi - lo) / cells)])
    return np.unique(np.concatenate([b, np.nextafter(b, np.float32(np.inf)), np.nextafter(b, np.float32(-np.inf))]))


@pytest.mark.parametrize("pre", LIDARS, ids=lambda p: type(p).__name__)
def test_points_on_bev_cell_borders(pre) -> None:
    if isinstance(pre, LidarBevFrontPreprocessing):
        g = pre._bev()
    else:
        g = pre
    xs = _borders(float(g.x_min_m), float(g.x_max_m), g.rows)
    ys = _borders(-float(g.y_half_m), float(g.y_half_m), g.cols)
    zs = _borders(float(g.z_min_m), float(g.z_max_m), 4)
    rng = np.random.default_rng(7)
    n = 30_000
    pts = np.stack([rng.choice(xs, n), rng.choice(ys, n), rng.choice(zs, n), rng.choice([0.0, 1.0, 7.5, 255.0], n)],
                   1).astype(np.float32)
    _assert_same(pre, pts)


def _fv_borders(pre: LidarBevFrontPreprocessing, n: int, seed: int) -> np.ndarray:
    """Points on (and one float32 step around) the front view's column and row borders and its range limit."""
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 19.0], np.float32), n)
    x = np.where(rng.random(n) < 0.1, np.nextafter(np.float32(0.1), np.float32(1.0)), x).astype(np.float32)
    half = math.tan(math.radians(pre.fv_hfov_deg) / 2.0)
    c = rng.integers(0, pre.fv_cols + 1, n)
    y = (x * ((0.5 - c / pre.fv_cols) * 2.0 * half)).astype(np.float32)
    r = rng.integers(0, pre.fv_rows + 1, n)
    elev = pre.fv_elev_max_deg - r * (pre.fv_elev_max_deg - pre.fv_elev_min_deg) / pre.fv_rows
    z = (np.sqrt(x.astype(np.float64) ** 2 + y.astype(np.float64) ** 2) * np.tan(np.radians(elev))).astype(np.float32)
    step = rng.integers(-2, 3, (n, 3)).astype(np.float32)
    pts = np.stack([x, y, z], 1)
    for k in range(3):
        up = np.nextafter(pts[:, k], np.float32(np.inf))
        down = np.nextafter(pts[:, k], np.float32(-np.inf))
        pts[:, k] = np.where(step[:, k] > 0, up, np.where(step[:, k] < 0, down, pts[:, k]))
    # points exactly at the range limit
    on_range = rng.random(n) < 0.05
    pts[on_range] = np.array([pre.fv_max_range_m, 0.0, 0.0], np.float32)
    inten = rng.choice(np.array([0.0, 1.0, 99.0, -5.0, 255.0], np.float32), n)
    return np.concatenate([pts, inten[:, None]], 1).astype(np.float32)


@pytest.mark.parametrize("pre", [FRONT, FRONT_SMALL, FRONT_NP64], ids=["default", "small", "np64"])
def test_points_on_front_view_borders(pre) -> None:
    pts = _fv_borders(pre, 20_000, seed=8)
    _assert_same(pre, pts)
    _assert_front_view_same(pre, pts)


def _ties(n: int, seed: int) -> np.ndarray:
    """Integer-coordinate clouds: many points share a pixel and an exactly equal range but differ in z / intensity
    (e.g. (6, 1, 0) and (6, 0, 1)), plus exact duplicates with different intensities."""
    rng = np.random.default_rng(seed)
    xyz = rng.integers(-8, 9, (n, 3)).astype(np.float32)
    xyz[:, 0] = np.abs(xyz[:, 0]) + 1
    perm = xyz.copy()
    perm[:, [1, 2]] = perm[:, [2, 1]]  # same range, swapped y / z
    sign = xyz * np.array([1, -1, -1], np.float32)  # same range, mirrored
    pts = np.concatenate([xyz, perm, sign, xyz, xyz[::-1]])
    inten = rng.integers(0, 256, len(pts)).astype(np.float32)
    out = np.concatenate([pts, inten[:, None]], 1)
    return out[rng.permutation(len(out))]


@pytest.mark.parametrize("pre", [FRONT, FRONT_SMALL, FRONT_NP64], ids=["default", "small", "np64"])
def test_front_view_ties_keep_the_first_point(pre) -> None:
    pts = _ties(3000, seed=9)
    # the test is only meaningful if some pixel holds several equally near points that differ
    fv_rows, fv_cols = pre.fv_rows, pre.fv_cols
    x, y, z = (pts[:, i].astype(np.float32) for i in range(3))
    rng_ = np.sqrt(x * x + y * y + z * z)
    col = np.floor((0.5 - (y / x) / (2.0 * math.tan(math.radians(pre.fv_hfov_deg) / 2.0))) * fv_cols)
    elev = np.degrees(np.arctan2(z, np.sqrt(x * x + y * y)))
    row = np.floor((pre.fv_elev_max_deg - elev) / (pre.fv_elev_max_deg - pre.fv_elev_min_deg) * fv_rows)
    ok = (col >= 0) & (col < fv_cols) & (row >= 0) & (row < fv_rows) & (rng_ < pre.fv_max_range_m)
    keys = {}
    differing = 0
    for p, r, zz, it in zip((row * fv_cols + col)[ok], rng_[ok], z[ok], pts[ok, 3]):
        prev = keys.setdefault((p, r), (zz, it))
        differing += prev != (zz, it)
    assert differing > 10
    _assert_same(pre, pts)
    _assert_front_view_same(pre, pts)
    _assert_same(pre, pts[::-1].copy())  # the other point of each tie wins now, still like the reference


def test_single_pixel_all_tied() -> None:
    """Every point in one pixel at the same range: the first one's height and intensity are kept."""
    n = 1000
    pts = np.zeros((n, 4), np.float32)
    pts[:, 0] = 5.0
    pts[:, 3] = np.arange(n, dtype=np.float32)
    pts[: n // 2, 1], pts[: n // 2, 2] = 1.0, 0.0
    pts[n // 2 :, 1], pts[n // 2 :, 2] = 0.0, 1.0
    pts = pts[np.random.default_rng(10).permutation(n)]
    for pre in (FRONT, FRONT_SMALL, FRONT_NP64):
        _assert_same(pre, pts)
        _assert_front_view_same(pre, pts)


@pytest.mark.parametrize("pre", LIDARS + RADARS, ids=lambda p: type(p).__name__)
def test_duplicates_in_bev_cells(pre) -> None:
    ncol = 5 if isinstance(pre, RadarBevPreprocessing) else 4
    rng = np.random.default_rng(11)
    base = rng.integers(-6, 7, (50, ncol)).astype(np.float32)
    base[:, 0] = np.abs(base[:, 0])
    pts = base[rng.integers(0, 50, 20_000)].copy()
    pts[:, 3] = rng.uniform(-300, 300, len(pts)).astype(np.float32)  # intensity / doppler sums in input order
    if ncol == 5:
        pts[:, 4] = rng.uniform(-30, 40, len(pts)).astype(np.float32)
    _assert_same(pre, pts)


def test_columns_is_points_columns_transposed() -> None:
    scan = _scan(seed=12, columns=64)
    plain = np.stack([scan["x"], scan["y"], scan["z"], scan["intensity"], scan["ring"]], 1)
    plain[::5, 1] = np.nan
    names = ("x", "y", "z", "intensity")
    for cloud in (scan, scan[["x", "y", "z"]], plain[:, :3], plain, plain.astype(np.float64) * 1.0000001,
                  np.nan_to_num(plain).astype(np.int32), plain[:0], _structured(plain[:, :4], dtype="<f8"), np.asfortranarray(plain)):
        want = _ref_points_columns(cloud, names, required=3, what="lidar cloud")
        got = _columns(cloud, names, required=3, what="lidar cloud")
        public = points_columns(cloud, names, required=3, what="lidar cloud")
        assert public.flags.c_contiguous and public.tobytes() == np.ascontiguousarray(want).tobytes()
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert got.tobytes() == np.ascontiguousarray(want.T).tobytes()


def test_errors_are_unchanged() -> None:
    cases = [
        (FRONT, np.zeros((5, 2), np.float32)),
        (FRONT, np.zeros(5, np.float32)),
        (FRONT, _structured(np.zeros((3, 2)), ("x", "y"))),
        (BEV, np.zeros((2, 3, 4), np.float32)),
        (RADAR, np.zeros((5, 4), np.float32)),
        (RADAR, _structured(np.zeros((3, 4)), ("x", "y", "z", "doppler"))),
    ]
    for pre, cloud in cases:
        with pytest.raises(ConversionError) as want:
            _ref(pre, cloud)
        with pytest.raises(ConversionError) as got:
            pre(cloud)
        assert str(got.value) == str(want.value)


# --------------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------------

_special = st.sampled_from([0.0, -0.0, 0.1, -0.1, 1.0, 2.0, 4.0, 8.0, -4.0, -8.0, 40.0, -40.0, 9.0, -3.0, 20.0, 80.0,
                            float("nan"), float("inf"), float("-inf"), 1e-38, 3e38, -3e38])
_coord = st.one_of(_special, st.floats(-60, 60, width=32), st.integers(-10, 10).map(float),
                   st.floats(allow_nan=True, allow_infinity=True, width=32))


def _clouds(ncols: st.SearchStrategy[int]) -> st.SearchStrategy[np.ndarray]:
    return ncols.flatmap(
        lambda k: hnp.arrays(np.float32, st.tuples(st.integers(0, 300), st.just(k)), elements=_coord)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud=_clouds(st.integers(3, 5)), dup=st.integers(0, 3), as_struct=st.booleans(), f64=st.booleans())
def test_property_lidar(cloud, dup, as_struct, f64) -> None:
    if dup:
        # repeated points: range ties everywhere; the copies differ in intensity, so the kept one shows
        copies = [cloud.copy() for _ in range(dup + 1)]
        if cloud.shape[1] > 3:
            for i, c in enumerate(copies):
                c[:, 3] += np.float32(i)
        cloud = np.concatenate(copies)
    if f64:
        cloud = cloud.astype(np.float64)
    if as_struct:
        names = ("x", "y", "z", "intensity", "ring")[: cloud.shape[1]]
        cloud = _structured(cloud, names, dtype=cloud.dtype)
    for pre in (FRONT, FRONT_SMALL, FRONT_NP64, BEV_SMALL, BEV_INT):
        _assert_same(pre, cloud)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cloud=_clouds(st.just(5)), as_struct=st.booleans())
def test_property_radar(cloud, as_struct) -> None:
    if as_struct:
        cloud = _structured(cloud, ("x", "y", "z", "doppler", "rcs"))
    for pre in RADARS:
        _assert_same(pre, cloud)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_property_front_view_grid_points(n, seed) -> None:
    """Points built on the front view's own row / column borders, perturbed by a few float32 steps."""
    rng = np.random.default_rng(seed)
    pre = FRONT_SMALL
    pts = _fv_borders(pre, n, seed)
    pts = np.concatenate([pts, pts[rng.integers(0, len(pts), n)]])  # duplicates
    _assert_same(pre, pts)
    _assert_front_view_same(pre, pts)
