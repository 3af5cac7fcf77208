"""`cmr-fusion import pjlab`: one PJLab frame (PCD LiDAR, CSV radar, image, JSON calibration) -> rosbag2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.bag.importers import import_pjlab, read_pjlab_matrix
from cmr_fusion_ros.cli import main
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.image import decode_compressed
from cmr_fusion_ros.core.pointcloud import decode_cloud
from cmr_fusion_ros.core.sensor_files import read_pcd, read_radar_csv

DATA = Path(__file__).resolve().parents[1] / "data" / "real" / "pjlab-sensorscalib"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "pjlab-sensorscalib"


def _calib_json(path: Path, name: str, matrix: np.ndarray, key: str = "sensor_calib", **extra) -> Path:
    m = {"rows": matrix.shape[0], "cols": matrix.shape[1], "type": 6, "continuous": True, "data": matrix.tolist()}
    path.write_text(json.dumps({name: {"sensor_name": "s", "param_type": "x", "param": {key: m, **extra}}}))
    return path


def _read(bag: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out


def _tf(msg) -> dict[str, np.ndarray]:
    out = {}
    for t in msg.transforms:
        q, p = t.transform.rotation, t.transform.translation
        x, y, z, w = q.x, q.y, q.z, q.w
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, [p.x, p.y, p.z]
        out[t.child_frame_id] = T
    return out


@pytest.fixture()
def calib(tmp_path: Path) -> dict[str, Path]:
    # lidar -> camera: the PJLab convention (p_cam = T p_lidar); camera looks along lidar x
    T_cam_lidar = np.array([[0.0, -1.0, 0.0, 0.05], [0.0, 0.0, -1.0, -0.2], [1.0, 0.0, 0.0, -0.1], [0, 0, 0, 1]])
    T_lidar_radar = np.array([[0.999876, 0.0157073, 0, 2.2728], [-0.0157073, 0.999876, 0, 0.47596], [0, 0, 1, -1.06],
                              [0, 0, 0, 1]])
    K = np.array([[2117.87, 0.0, 950.144], [0.0, 2121.65, 588.036], [0.0, 0.0, 1.0]])
    return {
        "lidar_to_camera": _calib_json(tmp_path / "l2c.json", "top_center_lidar-to-center_camera-extrinsic", T_cam_lidar),
        "radar_to_lidar": _calib_json(tmp_path / "r2l.json", "front_radar-to-top_center_lidar-extrinsic", T_lidar_radar),
        "camera_intrinsic": _calib_json(tmp_path / "k.json", "center_camera-intrinsic", K, key="cam_K",
                                        img_dist_w=1920, img_dist_h=1200,
                                        cam_dist={"rows": 1, "cols": 4, "data": [[-0.12, 0.12, -0.001, -0.0007]]}),
    }


def test_frame_becomes_one_message_per_sensor_with_extrinsics(tmp_path: Path, calib: dict[str, Path]) -> None:
    stamp = 1_650_000_000_123_000_000
    res = import_pjlab(tmp_path / "bag", lidar=DATA / "lidar.pcd", radar=DATA / "front_radar.csv",
                       image=DATA / "camera_0.jpg", stamp_ns=stamp, **calib)
    assert res.counts["/lidar/points"] == res.counts["/radar/points"] == res.counts["/camera/image/compressed"] == 1
    msgs = _read(tmp_path / "bag")
    for topic in ("/lidar/points", "/radar/points", "/camera/image/compressed", "/camera/camera_info", "/odom"):
        (s, m), = msgs[topic]
        assert s == stamp == m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
    lidar = decode_cloud(msgs["/lidar/points"][0][1])
    src = read_pcd(DATA / "lidar.pcd")
    assert lidar.dtype.names == src.dtype.names and np.array_equal(lidar["x"], src["x"], equal_nan=True)
    radar = decode_cloud(msgs["/radar/points"][0][1])
    ref = read_radar_csv(DATA / "front_radar.csv")
    assert radar.dtype.names[:5] == ("x", "y", "z", "doppler", "rcs") and len(radar) == len(ref) == 575
    assert np.array_equal(radar["doppler"], ref["doppler"])
    img = decode_compressed(msgs["/camera/image/compressed"][0][1])
    assert img.shape == (1200, 1920, 3)
    info = msgs["/camera/camera_info"][0][1]
    assert info.k[0] == 2117.87 and list(info.d[:4]) == pytest.approx([-0.12, 0.12, -0.001, -0.0007])
    statics = _tf(msgs["/tf_static"][0][1])
    T_cam_lidar = read_pjlab_matrix(calib["lidar_to_camera"])
    assert np.allclose(statics["camera"], np.linalg.inv(T_cam_lidar), atol=1e-6)  # base_link (= lidar) <- camera
    assert np.allclose(statics["radar"][:3, 3], [2.2728, 0.47596, -1.06], atol=1e-6)
    assert np.allclose(statics["lidar"], np.eye(4))


def test_cli_and_missing_or_broken_files(tmp_path: Path, calib: dict[str, Path], capsys) -> None:
    assert main(["import", "pjlab", "--out", str(tmp_path / "b1"), "--lidar", str(DATA / "lidar.pcd"),
                 "--radar", str(DATA / "front_radar_delphi.csv"), "--radar-to-lidar", str(calib["radar_to_lidar"])]) == 0
    assert "/radar/points 1" in capsys.readouterr().out
    with pytest.raises(BagError, match=r"nope\.pcd"):
        import_pjlab(tmp_path / "b2", lidar=tmp_path / "nope.pcd")
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": {"param": {"sensor_calib": {"data": [[1, 2], [3, 4]]}}}}')
    with pytest.raises(BagError, match=r"bad\.json: expected a 4x4 extrinsic"):
        import_pjlab(tmp_path / "b3", lidar=DATA / "lidar.pcd", radar=DATA / "front_radar.csv", radar_to_lidar=bad)
    with pytest.raises(BagError, match=r"camera_0\.jpg: an image needs"):
        import_pjlab(tmp_path / "b4", lidar=DATA / "lidar.pcd", image=DATA / "camera_0.jpg")
    notcsv = tmp_path / "radar.csv"
    notcsv.write_text("a,b\n1,2\n")
    with pytest.raises(BagError, match=r"radar\.csv: radar CSV has neither"):
        import_pjlab(tmp_path / "b5", lidar=DATA / "lidar.pcd", radar=notcsv, radar_to_lidar=calib["radar_to_lidar"])
    with pytest.raises(BagError, match=r"front_radar\.csv: a radar needs --radar-to-lidar"):
        import_pjlab(tmp_path / "b7", lidar=DATA / "lidar.pcd", radar=DATA / "front_radar.csv")
    assert main(["import", "pjlab", "--out", str(tmp_path / "b6"), "--lidar", str(tmp_path / "nope.pcd")]) == 2
    assert "nope.pcd" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/real/pjlab-sensorscalib not present")
def test_real_pjlab_calibration_files(tmp_path: Path) -> None:
    d = SHARED / "lidar2camera" / "manual_calib" / "data"
    r = SHARED / "radar2lidar" / "manual_calib" / "data"
    res = import_pjlab(tmp_path / "bag", lidar=d / "0.pcd", image=d / "0.png",
                       camera_intrinsic=d / "center_camera-intrinsic.json",
                       lidar_to_camera=d / "top_center_lidar-to-center_camera-extrinsic.json",
                       radar=r / "front_radar.csv", radar_to_lidar=r / "front_radar-to-top_center_lidar-extrinsic.json")
    msgs = _read(res.path)
    statics = _tf(msgs["/tf_static"][0][1])
    T = read_pjlab_matrix(d / "top_center_lidar-to-center_camera-extrinsic.json")
    assert np.allclose(statics["camera"] @ T, np.eye(4), atol=1e-5)
    # the camera sees the LiDAR's forward points: most points ahead of the vehicle project in front of the camera
    pts = decode_cloud(msgs["/lidar/points"][0][1])
    ahead = pts[(pts["x"] > 5) & (np.abs(pts["y"]) < 3)]
    cam = np.stack([ahead["x"], ahead["y"], ahead["z"], np.ones(len(ahead))])
    assert np.mean((T @ cam)[2] > 0) > 0.95


def test_real_extrinsics_are_repaired_with_a_warning_and_broken_ones_refused(tmp_path: Path) -> None:
    from cmr_fusion_ros.bag.importers import ORTHONORMAL_REFUSE, ORTHONORMAL_WARN, nearest_rotation

    # the real radar-to-camera extrinsic: rotation block off by 1.75e-3 (rounded entries)
    T = np.array([[0.0399657, -0.999118, 0.00348341, -0.422739], [0.02664, -0.0024178, -0.9996, -0.784315],
                  [0.997968, 0.040063, 0.02653979, -1.663040426], [0, 0, 0, 1]])
    f = _calib_json(tmp_path / "r2c.json", "radar-to-center_camera-extrinsic", T)
    warnings: list[str] = []
    m = read_pjlab_matrix(f, warnings)
    R = m[:3, :3]
    assert np.abs(R @ R.T - np.eye(3)).max() < 1e-12 and np.linalg.det(R) == pytest.approx(1.0)
    assert np.abs(R - T[:3, :3]).max() < 2e-3 and np.array_equal(m[:3, 3], T[:3, 3])
    assert len(warnings) == 1 and "r2c.json: rotation block off orthonormal by 1.75e-03" in warnings[0]
    good = np.eye(4)
    good[:3, :3] = [[1, 1e-6, 0], [-1e-6, 1, 0], [0, 0, 1]]
    quiet: list[str] = []
    assert np.array_equal(nearest_rotation(good, "g", quiet), good) and not quiet  # within ORTHONORMAL_WARN
    assert ORTHONORMAL_WARN < 1.75e-3 < ORTHONORMAL_REFUSE
    for bad, what in ((np.diag([1.0, 1.0, -1.0, 1.0]), "determinant -1"),
                      (np.diag([1.2, 1.0, 1.0, 1.0]), "not a rotation"),
                      (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
                      (np.full((4, 4), np.nan), "non-finite")):
        with pytest.raises(BagError, match=what):
            read_pjlab_matrix(_calib_json(tmp_path / "bad.json", "x", bad))


def test_any_subset_of_sensors_placeholders_and_far_apart_captures(tmp_path: Path, calib: dict[str, Path],
                                                                    capsys) -> None:
    from cmr_fusion_ros.bag.reader import read_samples

    # camera + radar without a LiDAR, placed by a radar-to-camera extrinsic: base_link = the camera frame
    T_cam_radar = np.array([[0.0, -1.0, 0.0, -0.4], [0.0, 0.0, -1.0, -0.8], [1.0, 0.0, 0.0, -1.7], [0, 0, 0, 1]])
    r2c = _calib_json(tmp_path / "r2c.json", "radar-to-center_camera-extrinsic", T_cam_radar)
    res = import_pjlab(tmp_path / "cr", radar=DATA / "front_radar_delphi.csv", image=DATA / "camera_0.jpg",
                       camera_intrinsic=calib["camera_intrinsic"], radar_to_camera=r2c)
    assert "/lidar/points" not in res.counts and res.counts["/radar/points"] == res.counts["/camera/image/compressed"] == 1
    msgs = _read(res.path)
    statics = _tf(msgs["/tf_static"][0][1])
    assert set(statics) == {"camera", "radar"} and np.allclose(statics["camera"], np.eye(4))
    assert np.allclose(statics["radar"], T_cam_radar, atol=1e-6)
    # empty Delphi track slots are dropped and counted
    (what, n), = res.dropped.items()
    radar = decode_cloud(msgs["/radar/points"][0][1])
    assert "placeholder" in what and n > 0 and len(radar) == 640 - n and (np.hypot(radar["x"], radar["y"]) > 0).all()
    assert len(list(read_samples(res.path, modalities=("camera", "radar")))) == 2  # the reader takes the pair
    # a LiDAR (Oct 2020) and an ARS408 radar file (Nov 2020): imported, with a warning naming both dates
    assert main(["import", "pjlab", "--out", str(tmp_path / "far"), "--lidar", str(DATA / "lidar.pcd"),
                 "--radar", str(DATA / "front_radar.csv"), "--radar-to-lidar", str(calib["radar_to_lidar"])]) == 0
    out = capsys.readouterr().out
    assert "warning: the files were captured 24 days apart (lidar.pcd at 2020-10-12" in out
    assert "front_radar.csv at 2020-11-05" in out
    # the LiDAR with the Delphi file of its own capture: no warning, the dropped rows reported
    assert main(["import", "pjlab", "--out", str(tmp_path / "near"), "--lidar", str(DATA / "lidar.pcd"),
                 "--radar", str(DATA / "front_radar_delphi.csv"), "--radar-to-lidar", str(calib["radar_to_lidar"])]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and f"dropped: {n} radar placeholder rows" in out
    with pytest.raises(BagError, match="at least one of --lidar, --radar, --image"):
        import_pjlab(tmp_path / "none")
