"""Preprocessing: shapes, values on hand-made inputs, validation, card round trip."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.preprocess import (
    CameraPreprocessing,
    LidarBevFrontPreprocessing,
    LidarBevPreprocessing,
    RadarBevPreprocessing,
    batch,
    default_preprocessing,
    ground_height,
    mirror,
    preprocessing_from_dict,
    turned_views,
)
from cmr_fusion_ros.core.types import Modality


def _cloud(rows: list[tuple], names: tuple[str, ...]) -> np.ndarray:
    dt = np.dtype([(n, np.float32) for n in names])
    return np.array(rows, dtype=dt)


def test_camera_resize_normalise_chw() -> None:
    pre = CameraPreprocessing(width=8, height=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    img = np.zeros((40, 80, 3), np.uint8)
    img[..., 0] = 255
    img[..., 1] = 0
    img[..., 2] = 51
    x = pre(img)
    assert x.shape == (3, 4, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[1], -2.0, atol=1e-6)
    np.testing.assert_allclose(x[2], 0.2 - 0.5, atol=1e-6)


def test_camera_keeps_left_right_and_rejects_bad_images() -> None:
    pre = CameraPreprocessing(width=4, height=2, mean=(0, 0, 0), std=(1, 1, 1))
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, :2] = 255
    x = pre(img)
    assert (x[:, :, :2] == 1).all() and (x[:, :, 2:] == 0).all()
    with pytest.raises(ConversionError, match="dtype"):
        pre(img.astype(np.float32))
    with pytest.raises(ConversionError, match="shape"):
        pre(np.zeros((2, 4), np.uint8))


def test_lidar_bev_cells_and_channels() -> None:
    pre = LidarBevPreprocessing(rows=4, cols=4, x_min_m=-4, x_max_m=4, y_half_m=4, z_min_m=0, z_max_m=4,
                                count_scale=3.0, intensity_scale=10.0)
    cloud = _cloud(
        [
            (3.5, 3.5, 1.0, 10.0),  # front-left corner cell (row 0, col 0)
            (3.0, 3.0, 2.0, 0.0),  # same cell, higher
            (-3.5, -3.5, 4.0, 5.0),  # rear-right corner (row 3, col 3)
            (0.5, -0.5, 9.0, 1.0),  # above z_max: dropped
            (100.0, 0.0, 1.0, 1.0),  # outside the grid: dropped
            (np.nan, 0.0, 1.0, 1.0),  # non-finite: dropped
        ],
        ("x", "y", "z", "intensity"),
    )
    x = pre(cloud)
    assert x.shape == (3, 4, 4)
    assert x[0, 0, 0] == pytest.approx(np.log1p(2) / np.log1p(3))
    assert x[0, 3, 3] == pytest.approx(np.log1p(1) / np.log1p(3))
    assert x[1, 0, 0] == pytest.approx(0.5)
    assert x[1, 3, 3] == pytest.approx(1.0)
    assert x[2, 0, 0] == pytest.approx(0.5)  # mean intensity 5 / 10
    assert x[2, 3, 3] == pytest.approx(0.5)
    others = np.ones((4, 4), bool)
    others[0, 0] = others[3, 3] = False
    assert (x[:, others] == 0).all()


def _street(rng: np.random.Generator, ground_z: float, ring_step_m: float) -> np.ndarray:
    """Flat ground at ``ground_z`` sampled by rings ``ring_step_m`` apart (a sparse or dense LiDAR), plus a wall 2 m
    high 10 m ahead sampled as densely, as ``(x, y, z, intensity)`` rows."""
    pts = []
    for r in np.arange(4.0, 30.0, ring_step_m):
        a = rng.uniform(0, 2 * np.pi, 200)
        pts.append(np.stack([r * np.cos(a), r * np.sin(a), ground_z + rng.normal(0, 0.02, a.size), np.full(a.size, 20.0)], 1))
    n = int(400 / ring_step_m)
    wall = np.stack([np.full(n, 10.2), rng.uniform(-3, 3, n), ground_z + rng.uniform(0.5, 2.0, n), np.full(n, 90.0)], 1)
    return np.concatenate([*pts, wall]).astype(np.float32)


def test_ground_height_is_the_ground_of_a_street_scan() -> None:
    rng = np.random.default_rng(0)
    for ground_z in (-1.9, -0.3, 0.8):
        pts = _street(rng, ground_z, 1.0)
        assert ground_height(pts.T) == pytest.approx(ground_z, abs=0.05)
    assert ground_height(_street(rng, -1.9, 1.0)[:40].T) is None  # too few points 3-25 m away


def test_lidar_bev_ground_clearance_and_binary_occupancy_make_dense_and_sparse_rings_alike() -> None:
    rng = np.random.default_rng(1)
    sparse, dense = _street(rng, -1.9, 3.0), _street(rng, -1.9, 0.5)
    plain = LidarBevPreprocessing(rows=32, cols=32, x_min_m=-40, x_max_m=40, y_half_m=40)
    invariant = LidarBevPreprocessing(rows=32, cols=32, x_min_m=-40, x_max_m=40, y_half_m=40, occupancy="binary",
                                      ground_clearance_m=0.3)
    # as before: the ground rings of the dense sensor fill more cells, so the two grids differ
    assert (plain(dense)[0] > 0).sum() > (plain(sparse)[0] > 0).sum()
    assert not np.array_equal(plain(dense)[0] > 0, plain(sparse)[0] > 0)
    a, b = invariant(sparse), invariant(dense)
    np.testing.assert_array_equal(a[0] > 0, b[0] > 0)  # the wall's cells only, whatever the ring spacing
    assert set(np.unique(a[0])) == {0.0, 1.0} and (a[0] > 0).sum() == (b[0] > 0).sum() > 0
    np.testing.assert_allclose(a[2][a[0] > 0], 90.0 / 255.0, rtol=1e-6)  # the ground's intensity left out too
    # the front view keeps the ground: only the bird's-eye half changes
    front = LidarBevFrontPreprocessing(rows=32, fv_rows=16, fv_cols=32)
    front_inv = LidarBevFrontPreprocessing(rows=32, fv_rows=16, fv_cols=32, occupancy="binary", ground_clearance_m=0.3)
    np.testing.assert_array_equal(front(dense)[:, :, 32:], front_inv(dense)[:, :, 32:])
    np.testing.assert_array_equal(front_inv(dense)[:, :, :32], LidarBevPreprocessing(
        rows=32, cols=32, x_min_m=-40, x_max_m=40, y_half_m=40, occupancy="binary", ground_clearance_m=0.3)(dense))


def test_lidar_bev_options_in_the_card() -> None:
    pre = LidarBevFrontPreprocessing(occupancy="binary", ground_clearance_m=0.3)
    d = pre.to_dict()
    assert d["params"]["occupancy"] == "binary" and d["params"]["ground_clearance_m"] == 0.3
    assert preprocessing_from_dict(d) == pre
    # at their defaults the keys stay out: cards and training caches of earlier models are unchanged
    plain = LidarBevFrontPreprocessing().to_dict()["params"]
    assert "occupancy" not in plain and "ground_clearance_m" not in plain
    assert preprocessing_from_dict({"kind": "lidar_bev_front", "params": plain}) == LidarBevFrontPreprocessing()


def test_lidar_plain_array_equals_structured() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(-30, 30, (500, 4)).astype(np.float32)
    pts[:, 2] = rng.uniform(-2, 4, 500)
    pre = LidarBevPreprocessing()
    s = _cloud([tuple(r) for r in pts], ("x", "y", "z", "intensity"))
    np.testing.assert_array_equal(pre(pts), pre(s))
    # no intensity field is allowed (zeros)
    assert pre(pts[:, :3])[2].max() == 0


def test_lidar_front_view_pixels_closest_point_and_bev_half() -> None:
    pre = LidarBevFrontPreprocessing(rows=8, half_extent_m=8.0, z_min_m=-2.0, z_max_m=2.0, fv_cols=4, fv_rows=4,
                                     fv_hfov_deg=90.0, fv_elev_min_deg=-20.0, fv_elev_max_deg=20.0,
                                     fv_max_range_m=20.0, intensity_scale=100.0)
    assert pre.input_shape == (3, 8, 12)
    cloud = _cloud(
        [
            (10.0, 1.0, 0.5, 50.0),  # ahead, slightly left: column 1 (y/x = 0.1 -> 0.45 * 4), elevation ~2.8 deg: row 1
            (5.0, 0.5, 0.25, 20.0),  # same pixel, closer: wins
            (4.0, -3.0, 0.0, 10.0),  # right: y/x = -0.75 -> column 3; elevation 0 -> row 2
            (-4.0, 0.0, 0.0, 10.0),  # behind: not in the front view, but in the bird's-eye half
            (10.0, 20.0, 0.0, 10.0),  # outside the horizontal field of view (column < 0)
        ],
        ("x", "y", "z", "intensity"),
    )
    x = pre(cloud)
    fv = x[:, ::2, 8:]  # front view at fv_rows resolution (rows are repeated twice)
    np.testing.assert_array_equal(x[:, 0::2, 8:], x[:, 1::2, 8:])
    r = np.sqrt(5.0**2 + 0.5**2 + 0.25**2)
    assert fv[0, 1, 1] == pytest.approx(1 - r / 20.0)
    assert fv[1, 1, 1] == pytest.approx((0.25 + 2.0) / 4.0)
    assert fv[2, 1, 1] == pytest.approx(0.2)
    assert fv[0, 2, 3] == pytest.approx(1 - 5.0 / 20.0)
    assert (fv[0] > 0).sum() == 2
    np.testing.assert_array_equal(x[:, :, :8], LidarBevPreprocessing(
        rows=8, cols=8, x_min_m=-8, x_max_m=8, y_half_m=8, z_min_m=-2, z_max_m=2, intensity_scale=100.0)(cloud))
    with pytest.raises(ConfigError, match="lidar.fv_rows"):
        LidarBevFrontPreprocessing(rows=8, fv_rows=3)


def test_radar_bev_channels_and_required_fields() -> None:
    pre = RadarBevPreprocessing(rows=2, cols=2, x_min_m=0, x_max_m=2, y_half_m=1, count_scale=1.0,
                                doppler_scale_mps=10.0, rcs_min_dbsm=0.0, rcs_max_dbsm=10.0)
    cloud = _cloud([(1.5, 0.5, 0, -4.0, 5.0), (1.5, 0.5, 0, -2.0, 20.0), (0.5, -0.5, 0, 30.0, -5.0)],
                   ("x", "y", "z", "doppler", "rcs"))
    x = pre(cloud)
    assert x[0, 0, 0] == pytest.approx(1.0)  # two points, clipped
    assert x[1, 0, 0] == pytest.approx(-0.3)
    assert x[2, 0, 0] == pytest.approx(1.0)
    assert x[1, 1, 1] == pytest.approx(1.0)  # doppler clipped
    assert x[2, 1, 1] == pytest.approx(0.0)
    with pytest.raises(ConversionError, match="doppler"):
        pre(_cloud([(1, 1, 0)], ("x", "y", "z")))
    assert pre(cloud[:0]).sum() == 0  # empty cloud -> empty grid


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: CameraPreprocessing(width=0), "camera.width"),
        (lambda: CameraPreprocessing(std=(1.0, 0.0, 1.0)), "camera.std"),
        (lambda: CameraPreprocessing(mean=(1.0, 2.0)), "camera.mean"),
        (lambda: LidarBevPreprocessing(z_min_m=2.0, z_max_m=1.0), "lidar.z_max_m"),
        (lambda: LidarBevPreprocessing(rows=1.5), "lidar.rows"),
        (lambda: LidarBevPreprocessing(occupancy="log"), "lidar.occupancy.*count | binary"),
        (lambda: LidarBevFrontPreprocessing(ground_clearance_m=-0.1), "lidar.ground_clearance_m"),
        (lambda: LidarBevFrontPreprocessing(ground_clearance_m=float("nan")), "lidar.ground_clearance_m"),
        (lambda: RadarBevPreprocessing(x_min_m=5.0, x_max_m=5.0), "radar.x_max_m"),
        (lambda: RadarBevPreprocessing(doppler_scale_mps=-1.0), "radar.doppler_scale_mps"),
    ],
)
def test_invalid_parameters_name_the_key(factory, match) -> None:
    with pytest.raises(ConfigError, match=match):
        factory()


@pytest.mark.parametrize("modality", list(Modality))
def test_card_round_trip(modality: Modality) -> None:
    pre = default_preprocessing(modality)
    again = preprocessing_from_dict(pre.to_dict())
    assert again == pre and again.modality is modality


def test_from_dict_rejects_unknown() -> None:
    with pytest.raises(ConfigError, match="preprocessing.kind"):
        preprocessing_from_dict({"kind": "sonar", "params": {}})
    with pytest.raises(ConfigError, match="preprocessing.params.cell"):
        preprocessing_from_dict({"kind": "lidar_bev", "params": {"cell": 3}})


def test_batch_stacks() -> None:
    pre = CameraPreprocessing(width=16, height=8)
    imgs = [np.full((20, 30, 3), i * 40, np.uint8) for i in range(3)]
    b = batch(pre, imgs)
    assert b.shape == (3, 3, 8, 16)
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(b[i], pre(img))


# --- a LiDAR scan at several headings (turned_views) -----------------------------------------------------------------


def _scan(seed: int = 0, n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.empty((n, 4), np.float32)
    pts[:, :2] = rng.uniform(-45, 45, (n, 2))
    pts[:, 2] = rng.uniform(-2, 6, n)
    pts[:, 3] = rng.uniform(0, 255, n)
    return pts


def test_turned_views_are_the_scan_seen_from_a_turned_sensor() -> None:
    pre = LidarBevFrontPreprocessing()
    pts = _scan()
    v = turned_views(pre, pts, 4)
    assert v.shape == (4, *pre.input_shape) and v.dtype == np.float32
    np.testing.assert_array_equal(v[0], pre(pts))
    # turned left by 90 deg: what was on the left (+y) is now ahead (+x), what was ahead is on the right (-y)
    left = pts.copy()
    left[:, 0], left[:, 1] = pts[:, 1], -pts[:, 0]
    np.testing.assert_array_equal(v[1], pre(left))
    back = pts.copy()
    back[:, :2] *= -1
    np.testing.assert_array_equal(v[2], pre(back))
    # a scan taken by a sensor turned right by 90 deg is found again in its view 1 (the sensor turned back left)
    right = pts.copy()
    right[:, 0], right[:, 1] = -pts[:, 1], pts[:, 0]
    np.testing.assert_array_equal(turned_views(pre, right, 4)[1], v[0])
    # other fields ride along; a structured cloud gives what the plain array gives
    cloud = np.zeros(len(pts), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])
    for i, name in enumerate(("x", "y", "z", "intensity")):
        cloud[name] = pts[:, i]
    np.testing.assert_array_equal(turned_views(pre, cloud, 4), v)
    np.testing.assert_array_equal(turned_views(pre, pts, 1), v[:1])


@pytest.mark.parametrize("views", [0, 65, True, 2.0])
def test_turned_views_bad_count_names_the_key(views) -> None:
    with pytest.raises(ConfigError, match="lidar_views"):
        turned_views(LidarBevFrontPreprocessing(), _scan(n=10), views)


def test_turned_views_only_for_lidar() -> None:
    with pytest.raises(ConfigError, match="LiDAR preprocessing"):
        turned_views(RadarBevPreprocessing(), _scan(n=10), 4)


@pytest.mark.parametrize("pre", [LidarBevFrontPreprocessing(), LidarBevPreprocessing()], ids=["bev_front", "bev"])
def test_turned_views_equal_preprocessing_the_turned_cloud(pre) -> None:
    """The fast path (fields read once, x and y turned) gives exactly what preprocessing each turned cloud gives."""
    from cmr_fusion_ros.core.accumulate import move_points

    pts = _scan(seed=3, n=5000)
    pts[::97, 1] = np.nan  # dropped as non-finite, in both paths
    views = turned_views(pre, pts, 8)
    for k in range(8):
        ref = pre(move_points(pts, (0.0, 0.0, 0.0), (0.0, 0.0, 2.0 * np.pi * k / 8)))
        np.testing.assert_array_equal(views[k], ref)


# --- the mirrored world (training's flip augmentation) -------------------------------------------------------------


def _mirrored(cloud: np.ndarray) -> np.ndarray:
    out = cloud.copy()
    out[:, 1] *= -1
    return out


@pytest.mark.parametrize("pre", [LidarBevFrontPreprocessing(), LidarBevPreprocessing()], ids=["bev_front", "bev"])
def test_mirror_equals_preprocessing_the_mirrored_scan(pre) -> None:
    pts = _scan(seed=7, n=4000)
    x = pre(pts)
    np.testing.assert_array_equal(mirror(pre, x), pre(_mirrored(pts)))
    np.testing.assert_array_equal(mirror(pre, mirror(pre, x)), x)
    np.testing.assert_array_equal(mirror(pre, np.stack([x, x]))[1], pre(_mirrored(pts)))  # batches too
    if isinstance(pre, LidarBevFrontPreprocessing):
        # the bird's-eye view and the front view side by side are each mirrored in place; reversing the whole width
        # would put the front view on the left
        assert pre.mirror_segments == ((0, 64), (64, 128))
        assert not np.array_equal(x[..., ::-1], pre(_mirrored(pts)))


def test_mirror_radar_and_camera() -> None:
    rng = np.random.default_rng(2)
    n = 300
    radar = np.zeros((n, 5), np.float32)
    radar[:, 0], radar[:, 1] = rng.uniform(0, 45, n), rng.uniform(-45, 45, n)
    radar[:, 3], radar[:, 4] = rng.uniform(-15, 15, n), rng.uniform(-25, 35, n)  # doppler, RCS: unchanged by a mirror
    pre = RadarBevPreprocessing()
    np.testing.assert_array_equal(mirror(pre, pre(radar)), pre(_mirrored(radar)))
    cam = CameraPreprocessing(width=16, height=8)
    img = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(mirror(cam, cam(img)), cam(np.ascontiguousarray(img[:, ::-1])))
    assert cam.mirror_segments == ((0, 16),)


def test_turned_views_equal_the_cloud_turned_by_move_points() -> None:
    """Every view is the preprocessing of the cloud turned by ``move_points`` (the odometry's planar motion), byte
    for byte, at headings that are not multiples of 90 degrees and with zero and negative-zero coordinates."""
    import math

    from cmr_fusion_ros.core.accumulate import move_points

    pre = LidarBevFrontPreprocessing()
    pts = _scan(seed=3, n=4000)
    pts[:400, :2] = np.round(pts[:400, :2])
    pts[:80, 1] = 0.0
    pts[80:160, 0] = -0.0
    v = turned_views(pre, pts, 16)
    for k in (1, 3, 7, 10, 15):
        turned = move_points(pts, (0.0, 0.0, 0.0), (0.0, 0.0, 2.0 * math.pi * k / 16))
        assert v[k].tobytes() == pre(turned).tobytes(), k


def test_bev_cells_equal_flooring_first_at_edges_and_for_odd_values():
    # _bev_indices decides which points are kept on the unfloored values; the cells must be those of flooring first
    from cmr_fusion_ros.core.preprocess import _bev_cells, _bev_indices

    rng = np.random.default_rng(3)
    x = rng.uniform(-60, 60, 20000).astype(np.float32)
    y = rng.uniform(-60, 60, 20000).astype(np.float32)
    edges = np.array([40.0, -40.0, 39.999996, -39.999996, 0.0, -0.0, 1.25, -1.25, np.nan, np.inf, -np.inf, 3e38, -3e38,
                      np.nextafter(np.float32(40), np.float32(0))], np.float32)
    x = np.concatenate([x, edges, np.zeros_like(edges), edges])
    y = np.concatenate([y, np.zeros_like(edges), edges, edges[::-1]])
    for x_min, x_max, y_half, rows, cols in ((-40.0, 40.0, 40.0, 64, 64), (0.0, 40.0, 40.0, 32, 64)):
        with np.errstate(invalid="ignore", over="ignore"):
            row = np.floor((x_max - x) * (rows / (x_max - x_min))).astype(np.int64)
            col = np.floor((y_half - y) * (cols / (2.0 * y_half))).astype(np.int64)
            idx, keep = _bev_indices(x, y, x_min, x_max, y_half, rows, cols)
        want = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        assert np.array_equal(keep, want)
        assert np.array_equal(idx, (row * cols + col)[want])
        with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf / 3e38 cast, as flooring first does
            every, keep_all = _bev_cells(x, y, x_min, x_max, y_half, rows, cols)  # left-out points: an extra cell
        assert np.array_equal(keep_all, want) and np.array_equal(every[want], idx)
        assert (every[~want] == rows * cols).all()
