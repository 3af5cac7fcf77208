"""`cmr-fusion import dgp`: poses and timestamps in the bag match the source scene JSON; broken input names the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmr_fusion_ros.bag.importers import dgp_time_offset_ns, import_dgp, parse_dgp_time
from cmr_fusion_ros.cli import main
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.pointcloud import decode_cloud

SHARED_DGP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "tri-dgp" / "tests" / "data" / "dgp" / "test_scene"


def _qmat(x, y, z, w) -> np.ndarray:
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _T_from_json(p: dict) -> np.ndarray:
    r, t = p["rotation"], p["translation"]
    T = np.eye(4)
    T[:3, :3] = _qmat(r["qx"], r["qy"], r["qz"], r["qw"])
    T[:3, 3] = [t["x"], t["y"], t["z"]]
    return T


def _T_from_msg(tf) -> np.ndarray:
    q, t = tf.rotation, tf.translation
    T = np.eye(4)
    T[:3, :3] = _qmat(q.x, q.y, q.z, q.w)
    T[:3, 3] = [t.x, t.y, t.z]
    return T


def _T_from_odom(m) -> np.ndarray:
    p = m.pose.pose
    T = np.eye(4)
    T[:3, :3] = _qmat(p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)
    T[:3, 3] = [p.position.x, p.position.y, p.position.z]
    return T


def _read(bag: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out


def _check_against_source(bag: Path, scene_json: Path) -> int:
    """Every datum of the scene JSON is in the bag at its timestamp, with the pose the JSON gives. Returns #datums."""
    scene = json.loads(scene_json.read_text())
    record = json.loads((bag / "import.json").read_text())
    offset = record["time_offset_ns"]
    msgs = _read(bag)
    statics = {t.child_frame_id: _T_from_msg(t.transform) for t in msgs["/tf_static"][0][1].transforms}
    odom = {s: m for s, m in msgs["/odom"]}
    by_frame: dict[tuple[str, int], object] = {}
    for topic, items in msgs.items():
        if topic.endswith("/points") or topic.endswith("/image/compressed") or topic.endswith("/image"):
            for stamp, m in items:
                assert stamp == m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                by_frame[(m.header.frame_id, stamp)] = m
    defining: dict[int, str] = {}  # the datum whose pose gives the vehicle pose at a stamp: point cloud first, by name
    for d in sorted(scene["data"], key=lambda d: ("point_cloud" not in d["datum"], d["id"]["name"])):
        defining.setdefault(parse_dgp_time(d["id"]["timestamp"], "test"), d["id"]["name"])
    # an Odometry at each distinct source timestamp, and interpolated ones between them: no gap over the step
    assert {t - offset for t in defining} <= set(odom)
    step = record["odom_step_s"] * 1e9
    assert np.diff(sorted(odom)).max() <= 1.5 * step
    for a, b in zip(sorted(defining)[:-1], sorted(defining)[1:]):  # between two stamps: on the line joining them
        mid = [t for t in odom if a - offset < t < b - offset]
        for t in mid:
            f = (t + offset - a) / (b - a)
            pa, pb = _T_from_odom(odom[a - offset])[:3, 3], _T_from_odom(odom[b - offset])[:3, 3]
            assert np.allclose(_T_from_odom(odom[t])[:3, 3], pa + f * (pb - pa), atol=1e-6)
    for d in scene["data"]:
        name = d["id"]["name"]
        source_ns = parse_dgp_time(d["id"]["timestamp"], "test")
        stamp = source_ns - offset
        assert (name.lower(), stamp) in by_frame, (name, d["id"]["timestamp"])
        ((_, body),) = d["datum"].items()
        # vehicle pose at the stamp (Odometry) composed with the sensor extrinsic (tf_static) = the datum's world pose
        # (exact for the defining datum; the real scenes' cameras at one stamp disagree by a few mm / 1e-4 rad)
        world_sensor = _T_from_odom(odom[stamp]) @ statics[name.lower()]
        tol = 1e-6 if defining[source_ns] == name else 1e-2
        assert np.allclose(world_sensor, _T_from_json(body["pose"]), atol=tol), name
        if "point_cloud" in d["datum"]:
            src = np.load(scene_json.parent / body["filename"])["data"]
            pts = decode_cloud(by_frame[(name.lower(), stamp)])
            assert np.allclose(pts["x"], src[:, 0], atol=1e-4) and np.allclose(pts["intensity"], src[:, 3], atol=1e-3)
        else:
            raw = (scene_json.parent / body["filename"]).read_bytes()
            assert bytes(by_frame[(name.lower(), stamp)].data) == raw  # passed through, not re-encoded
    return len(scene["data"])


# ------------------------------------------------------------------------------------------------ synthetic scene
def _write_scene(root: Path, *, t0: str = "2020-01-02T03:04:05.500000Z", broken: str | None = None) -> Path:
    scene_dir = root / "scene_x"
    (scene_dir / "calibration").mkdir(parents=True)
    (scene_dir / "point_cloud" / "LIDAR").mkdir(parents=True)
    (scene_dir / "rgb" / "CAMERA_01").mkdir(parents=True)
    cam_ext = {"rotation": {"qx": -0.5, "qy": 0.5, "qz": -0.5, "qw": 0.5}, "translation": {"x": 1.5, "y": 0.1, "z": 1.4}}
    ident = {"rotation": {"qx": 0.0, "qy": 0.0, "qz": 0.0, "qw": 1.0}, "translation": {"x": 0.0, "y": 0.0, "z": 1.8}}
    calib = {"names": ["LIDAR", "CAMERA_01"], "extrinsics": [ident, cam_ext],
             "intrinsics": [{"fx": 0, "fy": 0, "cx": 0, "cy": 0, "skew": 0},
                            {"fx": 500.0, "fy": 501.0, "cx": 31.5, "cy": 23.5, "skew": 0.0}]}
    (scene_dir / "calibration" / "ck.json").write_text(json.dumps(calib))
    rng = np.random.default_rng(0)
    data, samples = [], []
    base_ns = parse_dgp_time(t0, "t0")
    for k in range(3):
        yaw = 0.3 * k
        veh = np.eye(4)
        veh[:3, :3] = _qmat(0, 0, np.sin(yaw / 2), np.cos(yaw / 2))
        veh[:3, 3] = [10.0 * k, 2.0 * k, 0.5]
        keys = []
        for name, ext in (("LIDAR", ident), ("CAMERA_01", cam_ext)):
            T = veh @ _T_from_json(ext)
            from cmr_fusion_ros.sim.geometry import quat_from_matrix

            qx, qy, qz, qw = quat_from_matrix(T[:3, :3])
            pose = {"rotation": {"qx": qx, "qy": qy, "qz": qz, "qw": qw},
                    "translation": {"x": T[0, 3], "y": T[1, 3], "z": T[2, 3]}}
            ns = base_ns + k * 100_000_000 + (0 if name == "LIDAR" else 21_000_000)
            sec, frac = divmod(ns, 10**9)
            from datetime import datetime, timezone

            stamp = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac // 1000:06d}Z"
            key = f"{name}_{k}"
            keys.append(key)
            if name == "LIDAR":
                fn = f"point_cloud/LIDAR/{k}.npz"
                np.savez(scene_dir / fn, data=rng.normal(size=(100, 4)))
                datum = {"point_cloud": {"filename": fn, "pose": pose, "point_format": ["X", "Y", "Z", "INTENSITY"]}}
            else:
                fn = f"rgb/CAMERA_01/{k}.jpg"
                cv2.imwrite(str(scene_dir / fn), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
                datum = {"image": {"filename": fn, "pose": pose, "width": 64, "height": 48, "channels": 3}}
            data.append({"id": {"name": name, "timestamp": stamp, "index": str(k)}, "key": key, "datum": datum})
        samples.append({"calibration_key": "ck", "datum_keys": keys, "id": {"index": str(k)}})
    if broken == "timestamp":
        data[1]["id"]["timestamp"] = "yesterday"
    elif broken == "kind":
        data[0]["datum"] = {"radar_scan": {"filename": "x", "pose": data[0]["datum"]["point_cloud"]["pose"]}}
    elif broken == "sensor":
        data[0]["id"]["name"] = "LIDAR_99"
    elif broken == "file":
        (scene_dir / "point_cloud" / "LIDAR" / "1.npz").unlink()
    path = scene_dir / "scene_abc.json"
    path.write_text(json.dumps({"name": "x", "log": "", "metadata": {}, "description": "", "ontologies": {},
                                "samples": samples, "data": data}))
    return path


def test_synthetic_scene_poses_and_timestamps_match_the_json(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)
    res = import_dgp(scene, tmp_path / "bag")
    assert res.time_offset_ns == 0  # 2020 fits ROS time: stamps unchanged
    assert _check_against_source(tmp_path / "bag", scene) == 6
    msgs = _read(tmp_path / "bag")
    info = msgs["/camera/camera_info"][0][1]
    assert (info.width, info.height) == (64, 48) and info.k[0] == 500.0 and info.k[4] == 501.0
    assert {m.header.frame_id for _, m in msgs["/odom"]} == {"odom"}


def test_raw_images_decode_the_jpeg(tmp_path: Path) -> None:
    scene = _write_scene(tmp_path)
    import_dgp(scene, tmp_path / "bag", raw_images=True, storage="sqlite3")
    img = _read(tmp_path / "bag")["/camera/image"][0][1]
    ref = cv2.cvtColor(cv2.imread(str(scene.parent / "rgb" / "CAMERA_01" / "0.jpg")), cv2.COLOR_BGR2RGB)
    assert img.encoding == "rgb8" and np.array_equal(np.asarray(img.data).reshape(48, 64, 3), ref)


@pytest.mark.parametrize(
    ("broken", "match"),
    [("timestamp", r"scene_abc\.json data\[1\].*bad timestamp 'yesterday'"),
     ("kind", r"data\[0\].*unsupported datum kind 'radar_scan'"),
     ("sensor", r"data\[0\].*'LIDAR_99' is not in the calibration"),
     ("file", r"1\.npz.*missing")],
)
def test_broken_input_names_the_file_and_problem(tmp_path: Path, broken: str, match: str) -> None:
    scene = _write_scene(tmp_path, broken=broken)
    with pytest.raises(BagError, match=match):
        import_dgp(scene, tmp_path / "bag")
    assert not (tmp_path / "bag").exists()  # no half-written bag left behind


def test_not_a_scene_and_missing_calibration(tmp_path: Path) -> None:
    bad = tmp_path / "scene_bad.json"
    bad.write_text("{\"foo\": 1}")
    with pytest.raises(BagError, match="not a DGP scene JSON"):
        import_dgp(bad, tmp_path / "o1")
    scene = _write_scene(tmp_path)
    (scene.parent / "calibration" / "ck.json").unlink()
    with pytest.raises(BagError, match=r"ck\.json: cannot read"):
        import_dgp(scene, tmp_path / "o2")


def test_time_offset_is_whole_days_only_when_needed() -> None:
    assert dgp_time_offset_ns([1_600_000_000 * 10**9]) == 0
    t = parse_dgp_time("2463-05-15T00:38:58.203752Z", "x")
    off = dgp_time_offset_ns([t])
    assert off % (86_400 * 10**9) == 0
    shifted = t - off
    assert 0 < shifted < (2**31 - 1) * 10**9
    assert shifted % (86_400 * 10**9) == (38 * 60 + 58) * 10**9 + 203_752_000  # time of day kept


# ------------------------------------------------------------------------------------------------ the real scenes
@pytest.mark.skipif(not SHARED_DGP.is_dir(), reason="../shared/data/real/tri-dgp not present")
def test_real_dgp_scenes_import_with_matching_poses_and_timestamps(tmp_path: Path, capsys) -> None:
    assert main(["import", "dgp", str(SHARED_DGP), "--out", str(tmp_path / "dgp")]) == 0
    printed = capsys.readouterr().out
    scenes = sorted(SHARED_DGP.glob("scene_*/scene_*.json"))
    assert len(scenes) == 2
    total = 0
    for scene in scenes:
        bag = tmp_path / "dgp" / scene.parent.name
        assert str(bag) in printed
        total += _check_against_source(bag, scene)
    assert total == 12 + 21
    # the reader's gap rule (1 s between odometry messages) drops no sample of the 1 Hz scenes: the odometry is dense
    from cmr_fusion_ros.bag.reader import read_samples

    for scene in scenes:
        bag = tmp_path / "dgp" / scene.parent.name
        with_pose = list(read_samples(bag, modalities=("lidar", "camera")))
        without = list(read_samples(bag, modalities=("lidar", "camera"), require_pose=False))
        assert len(with_pose) == len(without) > 0
