"""Rig-aware inputs (core.rig, bag.rig_info): each transform against a slow reference or a hand-made case."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.preprocess import default_preprocessing
from cmr_fusion_ros.core.rig import (
    CANONICAL_RIG,
    CameraIntrinsics,
    CameraWarp,
    LidarLayout,
    RigAdapter,
    RigOptions,
    SensorMount,
    SensorRig,
    crop_azimuth,
    crop_elevation,
    estimate_lidar_layout,
    intensity_scale_for,
    match_lidar_density,
    move_points_between,
    rig_adapters,
)
from cmr_fusion_ros.core.types import Modality

LIDAR_DT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])
RADAR_DT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("doppler", "<f4"), ("rcs", "<f4")])


def _quat(axis: tuple[float, float, float], angle: float) -> tuple[float, float, float, float]:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    s = math.sin(angle / 2)
    return (a[0] * s, a[1] * s, a[2] * s, math.cos(angle / 2))


def _scan(beams: int, columns: int, vmin: float, vmax: float, rng: np.random.Generator, r: float = 10.0,
          drop: float = 0.0) -> np.ndarray:
    """A spinning LiDAR's scan of a sphere of radius ~r, column-major like the simulator's."""
    el = np.radians(np.linspace(vmin, vmax, beams))
    az = np.linspace(np.pi, -np.pi, columns, endpoint=False)
    A, E = np.meshgrid(az, el, indexing="ij")
    d = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
    rr = r + rng.uniform(-1, 1, len(d))
    out = np.empty(len(d), LIDAR_DT)
    out["x"], out["y"], out["z"] = (d * rr[:, None]).T
    out["intensity"] = rng.uniform(0, 200, len(d))
    out["ring"] = np.broadcast_to(np.arange(beams), (columns, beams)).reshape(-1)
    return out[rng.random(len(d)) >= drop]


# ------------------------------------------------------------------------------------------------------ mounts
def test_canonical_rig_is_the_simulators_default_rig() -> None:
    from cmr_fusion_ros.sim.config import SimConfig
    from cmr_fusion_ros.sim.sensors import optical_rotation

    c = SimConfig()
    assert CANONICAL_RIG.camera.close_to(CameraIntrinsics(c.camera.width, c.camera.height, *c.camera.intrinsics))
    assert CANONICAL_RIG.camera_mount.close_to(SensorMount.from_matrix(optical_rotation(), c.camera.translation))
    assert CANONICAL_RIG.lidar_mount.close_to(SensorMount(c.lidar.translation))
    assert CANONICAL_RIG.radar_mount.close_to(SensorMount(c.radar.translation))
    assert CANONICAL_RIG.lidar_layout == LidarLayout(c.lidar.beams, c.lidar.columns, c.lidar.vfov_min_deg,
                                                     c.lidar.vfov_max_deg)
    assert CANONICAL_RIG.radar_hfov_deg == c.radar.hfov_deg


@pytest.mark.parametrize("axis,angle", [((0, 0, 1), 0.3), ((1, 2, 3), -2.0), ((0, 1, 0), math.pi - 1e-3)])
def test_mount_matrix_round_trip(axis, angle) -> None:
    m = SensorMount((1.0, -2.0, 0.5), _quat(axis, angle))
    back = SensorMount.from_matrix(m.matrix, m.translation)
    np.testing.assert_allclose(back.matrix, m.matrix, atol=1e-9)
    np.testing.assert_allclose(m.matrix @ m.matrix.T, np.eye(3), atol=1e-12)


def test_move_points_between_matches_a_per_point_reference() -> None:
    rng = np.random.default_rng(0)
    src = SensorMount((0.5, 0.2, 1.5), _quat((0.1, 0.3, 1.0), 0.4))
    dst = SensorMount((1.0, 0.0, 1.9), _quat((0, 1, 0), -0.1))
    cloud = _scan(4, 32, -10, 10, rng)
    out = move_points_between(cloud, src, dst)

    def homogeneous(m: SensorMount) -> np.ndarray:
        t = np.eye(4)
        t[:3, :3], t[:3, 3] = m.matrix, m.translation
        return t

    ref = np.linalg.inv(homogeneous(dst)) @ homogeneous(src)
    for i in range(len(cloud)):
        p = ref @ np.array([cloud["x"][i], cloud["y"][i], cloud["z"][i], 1.0])
        np.testing.assert_allclose([out["x"][i], out["y"][i], out["z"][i]], p[:3], atol=1e-4)
    np.testing.assert_array_equal(out["intensity"], cloud["intensity"])
    np.testing.assert_array_equal(out["ring"], cloud["ring"])


def test_a_point_on_the_ground_keeps_its_height_above_ground_between_mount_heights() -> None:
    ground = np.zeros(1, LIDAR_DT)
    ground["x"], ground["z"] = 10.0, -1.5  # the ground seen from a LiDAR 1.5 m up
    out = move_points_between(ground, SensorMount((0.5, 0, 1.5)), CANONICAL_RIG.lidar_mount)
    assert out["z"][0] == pytest.approx(-1.9) and out["x"][0] == pytest.approx(9.5)


def test_mount_compose_and_validation() -> None:
    a = SensorMount((1, 0, 0), _quat((0, 0, 1), math.pi / 2))
    b = SensorMount((1, 0, 0))
    np.testing.assert_allclose(a.compose(b).translation, (1, 1, 0), atol=1e-12)
    with pytest.raises(ConfigError, match="mount.rotation"):
        SensorMount((0, 0, 0), (0, 0, 0, 3))
    with pytest.raises(ConfigError, match="mount.translation"):
        SensorMount((0, 0))


# ------------------------------------------------------------------------------------------------------ LiDAR
@pytest.mark.parametrize("beams,columns,vmin,vmax", [(32, 1024, -25, 15), (16, 512, -15, 15), (64, 2048, -30, 20)])
@pytest.mark.parametrize("ring", [True, False])
def test_estimate_lidar_layout(beams, columns, vmin, vmax, ring) -> None:
    cloud = _scan(beams, columns, vmin, vmax, np.random.default_rng(1), drop=0.05)
    if not ring:
        cloud = cloud[["x", "y", "z", "intensity"]]
    layout = estimate_lidar_layout(cloud)
    assert layout.beams == beams and layout.columns == columns
    assert layout.vfov_min_deg == pytest.approx(vmin, abs=1e-3) and layout.vfov_max_deg == pytest.approx(vmax, abs=1e-3)


def test_estimate_lidar_layout_too_small_or_not_a_spinning_scanner_is_none() -> None:
    rng = np.random.default_rng(0)
    assert estimate_lidar_layout(_scan(2, 8, -1, 1, rng)) is None
    blob = np.zeros(3000, LIDAR_DT)
    for f in ("x", "y", "z"):
        blob[f] = rng.uniform(-30, 30, 3000)
    assert estimate_lidar_layout(blob[["x", "y", "z"]]) is None  # clusters of a few returns
    assert estimate_lidar_layout(blob) is None  # rings (all 0) not at one elevation
    cloud = blob[["x", "y", "z"]]
    assert RigAdapter(Modality.LIDAR, SensorRig())(cloud) is cloud  # nothing known: left alone


def test_a_lidar_without_a_layout_is_not_estimated_on_every_scan(monkeypatch) -> None:
    """Scans that do not look like a spinning scanner's are tried LAYOUT_TRIES times (scans under 100 points do not
    count), then the layout stays unknown and the scans pass without the estimate's cost; a layout found is kept."""
    import cmr_fusion_ros.core.rig as rig

    calls = []
    real = rig.estimate_lidar_layout
    monkeypatch.setattr(rig, "estimate_lidar_layout", lambda c: calls.append(len(c)) or real(c))
    rng = np.random.default_rng(2)
    blob = np.zeros(3000, LIDAR_DT)
    for f in ("x", "y", "z"):
        blob[f] = rng.uniform(-30, 30, 3000)
    adapter = RigAdapter(Modality.LIDAR, SensorRig())
    for cloud in [blob[:50]] * 3 + [blob] * 20:
        adapter(cloud)
    assert calls == [50] * 3 + [3000] * RigAdapter.LAYOUT_TRIES
    calls.clear()
    spinning = RigAdapter(Modality.LIDAR, SensorRig())
    scan = _scan(16, 512, -15, 15, rng)
    for _ in range(4):
        spinning(scan)
    assert calls == [len(scan)] and spinning.lidar_layout(scan).beams == 16


def test_density_of_the_canonical_layout_is_unchanged() -> None:
    cloud = _scan(32, 1024, -25, 15, np.random.default_rng(2))
    assert match_lidar_density(cloud, CANONICAL_RIG.lidar_layout, CANONICAL_RIG.lidar_layout) is cloud


def _slow_upsampled_column(col: list[tuple[float, float, float]], m: int) -> list[tuple[float, float]]:
    """Reference for one column of beams (elevation, range, intensity; NaN range = no return): the made returns as
    (elevation, range), by the rules of match_lidar_density, one pair at a time."""
    out = []
    step = col[1][0] - col[0][0]
    for (ea, ra, _), (eb, rb, _) in zip(col[:-1], col[1:]):
        for k in range(1, m):
            t = k / m
            e = ea + step * t
            a_ok, b_ok = not math.isnan(ra), not math.isnan(rb)
            if a_ok and b_ok:
                pa = ra * np.array([math.cos(math.radians(ea)), math.sin(math.radians(ea))])
                pb = rb * np.array([math.cos(math.radians(eb)), math.sin(math.radians(eb))])
                if np.linalg.norm(pa - pb) < 0.3 * min(ra, rb):
                    out.append((e, ra + (rb - ra) * t))
                    continue
            if a_ok and (t < 0.5 or (t == 0.5 and (not b_ok or ra <= rb))):
                out.append((e, ra))
            elif b_ok and t >= 0.5:
                out.append((e, rb))
    return out


@pytest.mark.parametrize("m", [2, 3])
def test_sparse_lidar_gets_returns_between_its_beams_like_a_slow_reference(m) -> None:
    # one column of 6 beams looking straight ahead: a wall at 10 m, a depth edge to 30 m, a missing return, 12 m
    el = np.radians(np.linspace(-10, 10, 6))
    ranges = [10.0, 10.2, 30.0, np.nan, 12.0, 12.5]
    step_deg = 4.0
    layout = LidarLayout(6, 1024, -10, 10)
    target = LidarLayout(6 * m - (m - 1), 1024, -10, 10)  # m times finer in elevation, same columns
    keep = [i for i, r in enumerate(ranges) if not math.isnan(r)]
    cloud = np.zeros(len(keep), LIDAR_DT)
    for j, i in enumerate(keep):
        cloud[j]["x"], cloud[j]["z"] = ranges[i] * math.cos(el[i]), ranges[i] * math.sin(el[i])
        cloud[j]["intensity"] = 10.0 * i
        cloud[j]["ring"] = i
    out = match_lidar_density(cloud, layout, target)
    np.testing.assert_array_equal(out[: len(cloud)], cloud)  # the scan's own returns first, unchanged
    made = out[len(cloud):]
    r = np.sqrt(made["x"] ** 2 + made["y"] ** 2 + made["z"] ** 2)
    got = sorted(zip(np.degrees(np.arcsin(made["z"] / r)).round(4), r.round(4)))
    ref = _slow_upsampled_column([(float(np.degrees(e)), r_, 0.0) for e, r_ in zip(el, ranges)], m)
    assert step_deg == pytest.approx(float(np.degrees(el[1] - el[0])))
    want = sorted((round(e, 4), round(r_, 4)) for e, r_ in ref)
    assert len(got) == len(want)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-3)


def test_sparse_lidar_in_columns_wraps_around() -> None:
    layout = LidarLayout(1, 8, 0, 0)
    target = LidarLayout(1, 16, 0, 0)
    az = np.radians(np.arange(8) * 45.0 - 180.0 + 1.0)
    cloud = np.zeros(8, LIDAR_DT)
    cloud["x"], cloud["y"] = 10 * np.cos(az), 10 * np.sin(az)  # a circle of radius 10: one surface all round
    out = match_lidar_density(cloud, layout, target)
    assert len(out) == 16
    np.testing.assert_allclose(np.hypot(out["x"], out["y"])[8:], 10.0, rtol=1e-6)  # on the same circle (range kept)
    made = np.sort(np.degrees(np.arctan2(out["y"][8:], out["x"][8:])))
    np.testing.assert_allclose(made, np.sort(((np.degrees(az) + 22.5 + 180) % 360) - 180), atol=1e-4)


def test_sparse_scan_fills_the_front_view_of_the_canonical_lidar() -> None:
    """A 16 x 512 scan of a closed room, densified, leaves no front-view row empty that the canonical scan fills."""
    pre = default_preprocessing(Modality.LIDAR)
    rng = np.random.default_rng(3)
    canon = _scan(32, 1024, -25, 15, rng)
    sparse = _scan(16, 512, -25, 15, rng)
    fv = lambda c: pre(c)[0, :, 64:] > 0  # noqa: E731
    rows_canon = fv(canon).any(axis=1)
    dense = match_lidar_density(sparse, LidarLayout(16, 512, -25, 15), CANONICAL_RIG.lidar_layout)
    assert (fv(sparse).mean() < 0.8 * fv(canon).mean()) and fv(dense).mean() >= 0.95 * fv(canon).mean()
    rows = lambda c: fv(c).any(axis=1)[rows_canon].mean()  # noqa: E731  (rows with a return, of the canonical's)
    assert rows(sparse) < 0.6 and rows(dense) >= 0.9  # 2.67-degree beams, 1.33 when densified, 1.25-degree rows


def test_dense_lidar_is_thinned() -> None:
    layout = LidarLayout(64, 2048, -25, 15)
    cloud = _scan(64, 2048, -25, 15, np.random.default_rng(4))
    out = match_lidar_density(cloud, layout, CANONICAL_RIG.lidar_layout)
    keep = (40 / 63) / (40 / 31) / 2  # 2.03 times denser in elevation, twice in azimuth
    assert len(out) == pytest.approx(len(cloud) * keep, abs=1)
    assert match_lidar_density(cloud, LidarLayout(36, 1024, -25, 15), CANONICAL_RIG.lidar_layout) is cloud  # < 20 %


def test_crops() -> None:
    pts = np.zeros(4, RADAR_DT)
    pts["x"] = [10, 10, 1, 0]
    pts["y"] = [0, 11, 2, 5]
    assert crop_azimuth(pts, 100.0)["y"].tolist() == [0, 11]  # 47.7 deg in, 63.4 and 90 out
    pts["z"] = [0, 0, 5, 0]
    assert len(crop_elevation(pts, -25, 15)) == 3


def test_intensity_scale() -> None:
    assert intensity_scale_for(113.0, 113.0, 2.0) == 1.0
    assert intensity_scale_for(70.0, 113.0, 2.0) == 1.0  # within a factor 2: left alone
    assert intensity_scale_for(0.2, 113.0, 2.0) == pytest.approx(565.0)
    assert intensity_scale_for(None, 113.0, 2.0) == 1.0
    assert intensity_scale_for(0.0, 113.0, 2.0) == 1.0


# ------------------------------------------------------------------------------------------------------ camera
def _ray_image(cam: CameraIntrinsics, mount: SensorMount | None = None) -> np.ndarray:
    """An image whose pixels encode their ray's azimuth (red) and elevation (green) in the vehicle frame."""
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    d = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, dtype=float)], -1)
    rot = (mount or CANONICAL_RIG.camera_mount).matrix
    w = d @ rot.T
    az = np.degrees(np.arctan2(w[..., 1], w[..., 0]))
    el = np.degrees(np.arctan2(w[..., 2], np.hypot(w[..., 0], w[..., 1])))
    img = np.zeros((cam.height, cam.width, 3), np.uint8)
    img[..., 0] = np.clip(np.round(128 + 2 * az), 0, 255)
    img[..., 1] = np.clip(np.round(128 + 2 * el), 0, 255)
    return img


def test_camera_warp_of_the_canonical_camera_is_the_image() -> None:
    cam = CANONICAL_RIG.camera
    img = _ray_image(cam)
    np.testing.assert_array_equal(CameraWarp(cam, cam)(img), img)


@pytest.mark.parametrize("width,height,hfov", [(480, 270, 110.0), (640, 480, 120.0), (320, 240, 70.0)])
def test_camera_warp_gives_the_canonical_rays(width, height, hfov) -> None:
    src = CameraIntrinsics.pinhole(width, height, hfov)
    dst = CANONICAL_RIG.camera
    out = CameraWarp(src, dst, border="black")(_ray_image(src))
    want = _ray_image(dst)
    inside = out.any(axis=2)  # a narrower camera leaves the canonical view's border black
    assert inside.mean() > (0.99 if hfov > 100 else 0.4)
    diff = np.abs(out.astype(int) - want.astype(int))[inside]
    assert np.percentile(diff, 99) <= 2  # bilinear taps between pixels whose values differ by about 1


def test_camera_warp_turns_a_pitched_camera_level() -> None:
    src = CameraIntrinsics.pinhole(400, 300, 100.0)
    pitched = CANONICAL_RIG.camera_mount.matrix @ SensorMount((0, 0, 0), _quat((1, 0, 0), math.radians(8))).matrix
    src_mount = SensorMount.from_matrix(pitched, (1.5, 0, 1.6))
    out = CameraWarp(src, CANONICAL_RIG.camera, src_mount, CANONICAL_RIG.camera_mount, border="black")(
        _ray_image(src, src_mount))
    want = _ray_image(CANONICAL_RIG.camera)
    inside = out.any(axis=2)
    assert inside.mean() > 0.9
    assert np.percentile(np.abs(out.astype(int) - want.astype(int))[inside], 99) <= 2


def test_camera_warp_matches_a_per_pixel_reference_with_distortion() -> None:
    src = CameraIntrinsics(64, 48, 40.0, 41.0, 31.0, 24.5, (-0.2, 0.05, 0.001, -0.002, 0.0))
    dst = CameraIntrinsics.pinhole(48, 36, 70.0)  # fx 34: no shrinking of the source first
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    smooth = 128 + 100 * np.sin(u / 5.0) * np.cos(v / 4.0)  # smooth: OpenCV's 1/32-pixel bilinear taps are exact enough
    img = np.stack([smooth, 255 - smooth, np.full_like(smooth, 60)], -1).astype(np.uint8)
    warp = CameraWarp(src, dst, border="black")
    assert warp.prescale == 1.0
    out = warp(img)
    k1, k2, p1, p2, k3 = src.distortion
    for v in range(dst.height):
        for u in range(dst.width):
            x, y = (u - dst.cx) / dst.fx, (v - dst.cy) / dst.fy
            r2 = x * x + y * y
            rad = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
            xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            su, sv = src.fx * xd + src.cx, src.fy * yd + src.cy
            if not (0 <= su <= src.width - 1 and 0 <= sv <= src.height - 1):
                continue
            u0, v0 = int(math.floor(su)), int(math.floor(sv))
            u1, v1 = min(u0 + 1, src.width - 1), min(v0 + 1, src.height - 1)
            a, b = su - u0, sv - v0
            ref = ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u1] + (1 - a) * b * img[v1, u0]
                   + a * b * img[v1, u1])
            np.testing.assert_allclose(out[v, u], ref, atol=2.0)


def test_camera_intrinsics_from_camera_info_and_validation() -> None:
    info = SimpleNamespace(width=400, height=300, k=[200.0, 0, 199.5, 0, 200.0, 149.5, 0, 0, 1], d=[0.0] * 5)
    cam = CameraIntrinsics.from_camera_info(info)
    assert cam.close_to(CANONICAL_RIG.camera) and cam.hfov_deg == pytest.approx(90.0)
    fisheye = SimpleNamespace(width=4, height=3, k=info.k, d=[0.1, 0.0, 0.0, 0.0], distortion_model="equidistant")
    with pytest.raises(ConversionError, match="equidistant"):
        CameraIntrinsics.from_camera_info(fisheye)
    with pytest.raises(ConversionError, match="CameraInfo.k"):
        CameraIntrinsics.from_camera_info(SimpleNamespace(width=4, height=3, k=[1.0], d=[]))
    with pytest.raises(ConfigError, match="camera_info.fx"):
        CameraIntrinsics(4, 3, 0.0, 1.0, 1.0, 1.0)
    with pytest.raises(ConversionError, match="camera_info"):
        CameraWarp(cam, cam)(np.zeros((10, 10, 3), np.uint8))


# ------------------------------------------------------------------------------------------------------ adapter
def _canonical_sensor() -> SensorRig:
    c = CANONICAL_RIG
    return SensorRig(camera_mount=c.camera_mount, camera=c.camera, lidar_mount=c.lidar_mount,
                     radar_mount=c.radar_mount)


def test_the_canonical_rig_gives_the_same_tensors() -> None:
    rng = np.random.default_rng(6)
    adapters = rig_adapters(_canonical_sensor(), tuple(Modality))
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    lidar = _scan(32, 1024, -25, 15, rng, drop=0.1)
    radar = np.zeros(50, RADAR_DT)
    for f in RADAR_DT.names:
        radar[f] = rng.uniform(-20, 20, 50)
    radar["x"] = np.abs(radar["x"])
    radar = crop_azimuth(radar, 108.0)  # past the canonical 100 degrees by the radar's azimuth noise
    for m, data in ((Modality.CAMERA, img), (Modality.LIDAR, lidar), (Modality.RADAR, radar)):
        pre = default_preprocessing(m)
        np.testing.assert_array_equal(pre(adapters[m](data)), pre(data))
    assert adapters[Modality.CAMERA].is_identity and adapters[Modality.RADAR].is_identity
    higher = replace(_canonical_sensor(), camera_mount=SensorMount(
        (0.8, 0.0, 2.0), CANONICAL_RIG.camera_mount.rotation))  # moved, not turned: nothing to resample
    assert RigAdapter(Modality.CAMERA, higher)(img) is img


def test_adapter_moves_a_low_lidar_to_the_canonical_mount_and_densifies() -> None:
    rng = np.random.default_rng(7)
    sensor = SensorRig(lidar_mount=SensorMount((0.5, 0.0, 1.5)))
    cloud = _scan(16, 512, -15, 15, rng)
    a = RigAdapter(Modality.LIDAR, sensor)
    out = a(cloud)
    assert a.lidar_layout(cloud) == LidarLayout(16, 512, -15.0, 15.0)
    ref = move_points_between(match_lidar_density(cloud, a.lidar_layout(cloud), CANONICAL_RIG.lidar_layout),
                              sensor.lidar_mount, CANONICAL_RIG.lidar_mount)
    np.testing.assert_array_equal(out, ref)
    cropped = RigAdapter(Modality.LIDAR, sensor, RigOptions(crop_fov=True))(cloud)
    np.testing.assert_array_equal(cropped, crop_elevation(ref, -25 - 40 / 31 / 2, 15 + 40 / 31 / 2))
    off = RigAdapter(Modality.LIDAR, sensor, RigOptions(enabled=False))
    assert off(cloud) is cloud


def test_adapter_rescales_a_foreign_intensity_scale_once_per_sensor() -> None:
    rng = np.random.default_rng(8)
    cloud = _scan(32, 1024, -25, 15, rng)
    cloud["intensity"] /= 255.0  # a 0..1 sensor
    a = RigAdapter(Modality.LIDAR, _canonical_sensor(), RigOptions(density=False))
    out = a(cloud)
    p90 = np.percentile(out["intensity"], 90)
    assert p90 == pytest.approx(CANONICAL_RIG.lidar_intensity_p90, rel=1e-4)
    later = a(cloud[:1000])  # the factor is the sensor's, found on its first scan
    np.testing.assert_allclose(later["intensity"], out["intensity"][:1000])
    dropped = RigAdapter(Modality.LIDAR, _canonical_sensor(), RigOptions(intensity="drop"))(cloud)
    assert not dropped["intensity"].any()


def test_adapter_radar_mount_and_field_of_view() -> None:
    radar = np.zeros(3, RADAR_DT)
    radar["x"], radar["y"], radar["z"] = [10.0, 1.0, 5.0], [0.0, 1.5, 0.0], [0.0, 0.0, 0.2]  # 56 deg: cropped
    sensor = SensorRig(radar_mount=SensorMount((3.4, 0.0, 0.8)), radar_hfov_deg=120.0)
    out = RigAdapter(Modality.RADAR, sensor, RigOptions(crop_fov=True))(radar)
    assert out["x"].tolist() == pytest.approx([9.8, 4.8]) and out["z"].tolist() == pytest.approx([0.2, 0.4])
    assert len(RigAdapter(Modality.RADAR, sensor)(radar)) == 3  # crop_fov is off by default


def test_rig_options_validation() -> None:
    with pytest.raises(ConfigError, match="rig.intensity"):
        RigOptions(intensity="percentile")
    with pytest.raises(ConfigError, match="rig.camera_border"):
        RigOptions(camera_border="red")
    with pytest.raises(ConfigError, match="rig.mount"):
        RigOptions(mount="yes")


# ------------------------------------------------------------------------------------------------------ bags
def test_static_mounts_and_camera_info_topic() -> None:
    from cmr_fusion_ros.bag.rig_info import camera_info_topic, static_mounts

    kit = SensorMount((1.0, 0.0, 1.0), _quat((0, 0, 1), math.pi))
    lidar = SensorMount((0.5, 0.0, 0.5))
    mounts = static_mounts([("base_link", "kit", kit), ("/kit", "lidar", lidar), ("other", "x", lidar)], "base_link")
    np.testing.assert_allclose(mounts["lidar"].translation, (0.5, 0.0, 1.5), atol=1e-12)
    assert "x" not in mounts
    assert camera_info_topic("/camera/image/compressed") == "/camera/camera_info"
    assert camera_info_topic("/cam_front/image") == "/cam_front/camera_info"


def test_read_rig_of_the_sample_bag(repo_root) -> None:
    from cmr_fusion_ros.bag.rig_info import read_rig

    rig = read_rig(repo_root / "bags" / "sample_town" / "session_00")
    c = CANONICAL_RIG
    assert rig.camera.close_to(CameraIntrinsics.pinhole(320, 240, 90.0))  # bags/sample_town/sim_sample.yaml
    assert rig.camera_mount.close_to(c.camera_mount) and rig.lidar_mount.close_to(c.lidar_mount)
    assert rig.radar_mount.close_to(c.radar_mount)


# ------------------------------------------------------------------------------------------------------ parameters
def test_parse_mount_forms() -> None:
    from cmr_fusion_ros.core.rig import parse_mount

    assert parse_mount("rig.lidar_mount", "") is None
    assert parse_mount("rig.lidar_mount", "0.5 0 1.5").close_to(SensorMount((0.5, 0, 1.5)))
    q = _quat((0, 0, 1), 0.3)
    assert parse_mount("k", "1, 2, 3, " + ", ".join(map(str, q))).close_to(SensorMount((1, 2, 3), q))
    # roll pitch yaw, fixed axes x then y then z: R = Rz(yaw) Ry(pitch) Rx(roll)
    r, p, y = 0.1, -0.2, 0.7
    rx = SensorMount((0, 0, 0), _quat((1, 0, 0), r)).matrix
    ry = SensorMount((0, 0, 0), _quat((0, 1, 0), p)).matrix
    rz = SensorMount((0, 0, 0), _quat((0, 0, 1), y)).matrix
    np.testing.assert_allclose(parse_mount("k", f"0 0 0 {r} {p} {y}").matrix, rz @ ry @ rx, atol=1e-12)
    for bad in ("1 2", "a b c", "1 2 3 4"):
        with pytest.raises(ConfigError, match="rig.radar_mount"):
            parse_mount("rig.radar_mount", bad)


def test_rig_options_from_a_parameter_section() -> None:
    from cmr_fusion_ros.core.config import FusionConfig

    cfg = FusionConfig.from_dict({"rig": {"lidar_mount": "0.5 0 1.5", "intensity_tolerance": 3,
                                          "camera_intrinsics": "480 270 168 168 239.5 134.5"}})
    assert cfg.rig.intensity_tolerance == 3.0 and FusionConfig.from_dict(cfg.to_dict()) == cfg
    recorded = SensorRig(lidar_mount=SensorMount((9, 9, 9)), radar_mount=SensorMount((3.4, 0, 0.8)))
    sensor = cfg.rig.sensor_rig(recorded)
    assert sensor.lidar_mount.close_to(SensorMount((0.5, 0, 1.5)))  # the parameter wins
    assert sensor.radar_mount.close_to(SensorMount((3.4, 0, 0.8)))  # the bag's where none is given
    assert sensor.camera.width == 480 and sensor.camera.fx == 168.0
    with pytest.raises(ConfigError, match="rig.camera_intrinsics"):
        FusionConfig.from_dict({"rig": {"camera_intrinsics": "480 270 168"}})
    with pytest.raises(ConfigError, match="rig.colour"):
        FusionConfig.from_dict({"rig": {"colour": 1}})


def test_pipeline_brings_each_topic_to_the_canonical_rig() -> None:
    """The pipeline's route gives the encoder the adapter's output for a LiDAR frame (the bag's rig, parameters win),
    before any merge; with rig.enabled false the frame's data as it is."""
    from cmr_fusion_ros.core.config import FusionConfig
    from cmr_fusion_ros.core.decode import Frame
    from cmr_fusion_ros.core.memory import SceneMemory
    from cmr_fusion_ros.core.pipeline import FusionPipeline

    class Recorder:  # an encoder without preprocessing: the route hands it the merged data
        def __init__(self, dim: int) -> None:
            self.dim, self.seen = dim, []

        def encode(self, items):
            self.seen.extend(items)
            out = np.zeros((len(items), self.dim), np.float32)
            out[:, 0] = 1.0
            return out

    rng = np.random.default_rng(9)
    cloud = _scan(16, 512, -15, 15, rng)
    fr = Frame(Modality.LIDAR, "/lidar/points", "lidar", 0, cloud)
    cfg = FusionConfig.from_dict({"rig": {"radar_mount": "3.4 0 0.8"}})
    enc = Recorder(cfg.memory.dim)
    pipe = FusionPipeline(cfg, {Modality.LIDAR: enc}, SceneMemory(cfg.memory))
    pipe.set_recorded_rig(SensorRig(lidar_mount=SensorMount((0.5, 0.0, 1.5))))
    pipe.embed(fr)
    want = RigAdapter(Modality.LIDAR, SensorRig(lidar_mount=SensorMount((0.5, 0.0, 1.5))))(cloud)
    np.testing.assert_array_equal(enc.seen[-1], want)
    assert pipe.embedder(Modality.LIDAR, fr.topic).adapter.sensor.radar_mount == SensorMount((3.4, 0.0, 0.8))
    off_cfg = FusionConfig.from_dict({"rig": {"enabled": False}})
    off_enc = Recorder(off_cfg.memory.dim)
    off = FusionPipeline(off_cfg, {Modality.LIDAR: off_enc}, SceneMemory(off_cfg.memory))
    off.embed(fr)
    assert off_enc.seen[-1] is cloud


def test_camera_adapter_scales_the_intrinsics_by_the_jpeg_reduction() -> None:
    """A JPEG decoded at 1/2 of its size (Frame.reduction 2) is warped with its CameraInfo scaled by 1/2."""
    src = CameraIntrinsics.pinhole(640, 480, 120.0)
    half = src.reduced(2)
    assert (half.width, half.height) == (320, 240)
    assert (half.fx, half.cx) == pytest.approx((src.fx / 2, (src.cx + 0.5) / 2 - 0.5))
    assert CameraIntrinsics(641, 481, 300.0, 300.0, 320.0, 240.0).reduced(2).width == 321  # ceil, as libjpeg
    adapter = RigAdapter(Modality.CAMERA, SensorRig(camera=src), RigOptions(camera_border="black"))
    out = adapter(_ray_image(half), reduction=2)
    assert out.shape == (CANONICAL_RIG.camera.height, CANONICAL_RIG.camera.width, 3)
    want = _ray_image(CANONICAL_RIG.camera)
    assert np.percentile(np.abs(out.astype(int) - want.astype(int)), 99) <= 2
    with pytest.raises(ConversionError, match="camera_info"):
        adapter(_ray_image(half))  # the same image said to be full size


def test_eval_and_train_rig_options() -> None:
    import argparse

    from cmr_fusion_ros.commands import eval as eval_cmd

    parser = argparse.ArgumentParser()
    eval_cmd.add_rig_arguments(parser)
    assert eval_cmd.rig_options_from_args(parser.parse_args([])) == RigOptions()
    assert eval_cmd.rig_options_from_args(parser.parse_args(["--rig", "off"])) is None
    got = eval_cmd.rig_options_from_args(parser.parse_args(
        ["--rig-skip", "mount,density", "--rig-intensity", "keep", "--rig-camera-pad", "no"]))
    assert got == RigOptions(mount=False, density=False, intensity="keep", camera_pad=False)
    with pytest.raises(ConfigError, match="--rig-skip"):
        eval_cmd.rig_options_from_args(parser.parse_args(["--rig-skip", "colour"]))


def test_adapter_thins_a_dense_lidar_only_when_asked() -> None:
    cloud = _scan(64, 1024, -30, 20, np.random.default_rng(10))
    sensor = SensorRig(lidar_mount=CANONICAL_RIG.lidar_mount)
    assert RigAdapter(Modality.LIDAR, sensor)(cloud) is cloud  # rig.thin is off by default
    thinned = RigAdapter(Modality.LIDAR, sensor, RigOptions(thin=True))(cloud)
    keep = (50 / 63) / (40 / 31)
    assert len(thinned) == pytest.approx(len(cloud) * keep, abs=1)
    sparse = _scan(16, 512, -15, 15, np.random.default_rng(11))
    assert len(RigAdapter(Modality.LIDAR, sensor, RigOptions(density=False, thin=True))(sparse)) == len(sparse)


def test_rig_params_command_prints_the_bags_rig_as_parameters(repo_root, capsys, tmp_path) -> None:
    from cmr_fusion_ros.bag.rig_info import read_rig
    from cmr_fusion_ros.cli import main
    from cmr_fusion_ros.core.config import FusionConfig

    bag = repo_root / "bags" / "sample_town" / "session_00"
    assert main(["rig-params", str(bag)]) == 0
    out = capsys.readouterr().out
    (tmp_path / "p.yaml").write_text(out)
    cfg = FusionConfig.from_yaml(tmp_path / "p.yaml", "fusion_node")
    got, want = cfg.rig.sensor_rig(), read_rig(bag)
    assert got.camera.close_to(want.camera, tol=1e-6)
    for m in ("camera_mount", "lidar_mount", "radar_mount"):
        assert getattr(got, m).close_to(getattr(want, m), tol_m=1e-6, tol_rad=1e-6)


@pytest.mark.parametrize("border", ["replicate", "reflect", "mean", "black"])
def test_camera_warp_borders(border) -> None:
    src = CameraIntrinsics.pinhole(40, 30, 60.0)  # narrower than the destination: a border to fill
    dst = CameraIntrinsics.pinhole(40, 30, 90.0)
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :, 0] = np.arange(40, dtype=np.uint8)[None, :] * 5  # red rises left to right
    out = CameraWarp(src, dst, border=border)(img)
    row = out[15, :8, 0].astype(int)  # the left border (the image starts about 9 pixels in)
    if border == "replicate":
        assert (row == row[-1]).all() and row[-1] <= 5  # the image's left edge, repeated
    elif border == "reflect":
        assert (np.diff(row) < 0).all()  # the image mirrored: red falls towards the image as it rose away from it
    else:
        assert (row == {"mean": 124, "black": 0}[border]).all()


def test_adapter_takes_odd_clouds() -> None:
    rng = np.random.default_rng(12)
    cloud = _scan(16, 512, -15, 15, rng)
    cloud["x"][::7] = np.nan
    cloud["z"][::11] = np.inf
    a = RigAdapter(Modality.LIDAR, SensorRig(lidar_mount=SensorMount((0.5, 0.0, 1.5))))
    out = a(cloud)
    assert np.isfinite(np.stack([out["x"], out["y"], out["z"]])).all() and len(out) > len(cloud)
    assert len(a(cloud[:0])) == 0  # an empty scan
    assert len(RigAdapter(Modality.LIDAR, SensorRig())(np.zeros(0, LIDAR_DT))) == 0
    plain = np.zeros((5, 4), np.float32)
    assert a(plain) is plain  # no field names: passed through


def test_fill_ground_adds_the_near_ground_only_where_the_nearest_return_is_ground() -> None:
    from cmr_fusion_ros.core.rig import fill_ground

    target = LidarLayout(32, 64, -25, 15)
    # ground seen from 5 m outwards all round, but a wall 2 m away in the sector straight ahead (azimuth ~0)
    az = np.radians(np.arange(0, 360, 2.0) - 180 + 1.0)
    ring = np.zeros(len(az), LIDAR_DT)
    ring["x"], ring["y"], ring["z"], ring["intensity"] = 5 * np.cos(az), 5 * np.sin(az), -1.9, 40.0
    wall = np.zeros(3, LIDAR_DT)
    wall["x"], wall["y"], wall["z"] = 2.0, [-0.01, 0.0, 0.01], 0.5
    out = fill_ground(np.concatenate([ring, wall]), target, -1.9, bins=16)
    made = out[len(ring) + 3:]
    d = np.hypot(made["x"], made["y"])
    assert len(made) and np.all(made["z"] == np.float32(-1.9)) and np.all(made["intensity"] == 40.0)
    el = np.radians(np.linspace(-25, 15, 32))
    ground_d = 1.9 / np.tan(-el[el < 0])
    assert np.all(d < 5.0)
    assert np.abs(d[:, None] - ground_d[None, :]).min(axis=1).max() < 1e-4  # at the target's beam elevations
    ahead = np.abs(np.degrees(np.arctan2(made["y"], made["x"]))) < 360 / 16 / 2
    assert not ahead.any()  # the wall's sector gets none
    assert len(fill_ground(ring[:0], target, -1.9)) == 0
