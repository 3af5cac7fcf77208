"""Bag reader: a small rosbag2 written here with rosbags, read back into samples with interpolated poses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.bag.reader import BagTopics, SensorSample, read_pose_track, read_samples
from cmr_fusion_ros.core.errors import BagError, ConfigError, ConversionError
from cmr_fusion_ros.core.image import encode_compressed
from cmr_fusion_ros.core.pointcloud import encode_cloud, structured
from cmr_fusion_ros.core.types import Modality

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag2 import Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
SEC = 1_000_000_000


def _header(ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // SEC, nanosec=ns % SEC), frame_id=frame)


def _cloud_msg(ns: int, frame: str, points: np.ndarray):
    w = encode_cloud(points)
    fields = [T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in w.fields]
    return T["sensor_msgs/msg/PointCloud2"](
        header=_header(ns, frame), height=w.height, width=w.width, fields=fields, is_bigendian=w.is_bigendian,
        point_step=w.point_step, row_step=w.row_step, data=np.frombuffer(w.data, np.uint8), is_dense=w.is_dense,
    )


def _odom_msg(ns: int, x: float, yaw: float):
    g = "geometry_msgs/msg/"
    pose = T[g + "Pose"](position=T[g + "Point"](x=x, y=0.0, z=0.0),
                         orientation=T[g + "Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
    twist = T[g + "Twist"](linear=T[g + "Vector3"](x=1.0, y=0.0, z=0.0), angular=T[g + "Vector3"](x=0.0, y=0.0, z=0.0))
    return T["nav_msgs/msg/Odometry"](
        header=_header(ns, "odom"), child_frame_id="base_link",
        pose=T[g + "PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=T[g + "TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def write_bag(path: Path, *, radar_names=("x", "y", "z", "doppler", "rcs"), raw_camera=False, odom=True,
              odom_topic="/odom", lidar_topic="/lidar/points", empty_radar=()) -> None:
    """2 s: odom at 10 Hz from t=1 s (x = t - 1, yaw = 0.1 t), sensors at 5 Hz from t=0.8 s; the radar scans
    numbered in ``empty_radar`` (0-9) have no point (a radar that saw nothing)."""
    with Writer(path, version=9) as w:
        c_odom = w.add_connection(odom_topic, "nav_msgs/msg/Odometry", typestore=TS) if odom else None
        cam_type = "sensor_msgs/msg/Image" if raw_camera else "sensor_msgs/msg/CompressedImage"
        cam_topic = "/camera/image" if raw_camera else "/camera/image/compressed"
        c_cam = w.add_connection(cam_topic, cam_type, typestore=TS)
        c_lid = w.add_connection(lidar_topic, "sensor_msgs/msg/PointCloud2", typestore=TS)
        c_rad = w.add_connection("/radar/points", "sensor_msgs/msg/PointCloud2", typestore=TS)
        msgs = []
        if odom:
            for i in range(21):
                ns = SEC + i * SEC // 10
                msgs.append((ns, c_odom, _odom_msg(ns, i / 10, 0.1 * (1 + i / 10))))
        for i in range(10):
            ns = 800_000_000 + i * 200_000_000
            img = np.zeros((24, 32, 3), np.uint8)
            img[:, :, 0] = 200  # red
            img[:, :16, 2] = 10 * i
            if raw_camera:
                bgr = np.ascontiguousarray(img[:, :, ::-1])
                cam = T["sensor_msgs/msg/Image"](header=_header(ns, "camera_optical_frame"), height=24, width=32,
                                                 encoding="bgr8", is_bigendian=0, step=96, data=bgr.reshape(-1))
            else:
                fmt, data = encode_compressed(img, "rgb8", "png")
                cam = T["sensor_msgs/msg/CompressedImage"](header=_header(ns, "camera_optical_frame"), format=fmt,
                                                           data=np.frombuffer(data, np.uint8))
            msgs.append((ns, c_cam, cam))
            lid = structured([("x", np.array([i, np.nan, 2.0], np.float32)), ("y", np.zeros(3, np.float32)),
                              ("z", np.ones(3, np.float32)), ("intensity", np.full(3, 7.0, np.float32)),
                              ("ring", np.arange(3, dtype=np.uint16))])
            msgs.append((ns, c_lid, _cloud_msg(ns, "lidar", lid)))
            n = 0 if i in empty_radar else 2
            rad = structured([(radar_names[0], np.full(n, 10.0, np.float32)), (radar_names[1], np.zeros(n, np.float32)),
                              (radar_names[2], np.zeros(n, np.float32)), (radar_names[3], np.full(n, -3.0, np.float32)),
                              (radar_names[4], np.full(n, float(i), np.float32))])
            msgs.append((ns, c_rad, _cloud_msg(ns, "radar", rad)))
        for ns, conn, msg in sorted(msgs, key=lambda m: m[0]):
            w.write(conn, ns + 1000, TS.serialize_cdr(msg, conn.msgtype))


def test_reads_all_modalities_with_interpolated_poses(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag)
    samples = list(read_samples(bag))
    assert all(isinstance(s, SensorSample) for s in samples)
    by = {m: [s for s in samples if s.modality is m] for m in Modality}
    # sensor stamps 0.8 .. 2.6 s; odom covers 1.0 .. 3.0 s, max gap 0.2 s: 0.8 s is exactly at the edge -> kept
    assert [s.stamp_ns for s in by[Modality.LIDAR]] == [800_000_000 + i * 200_000_000 for i in range(10)]
    s = by[Modality.LIDAR][3]  # t = 1.4 s -> x = 0.4
    assert s.pose.x == pytest.approx(0.4) and s.frame_id == "lidar" and s.topic == "/lidar/points"
    yaw = 2 * math.atan2(s.pose.qz, s.pose.qw)
    assert yaw == pytest.approx(0.14, abs=1e-6)
    assert by[Modality.LIDAR][0].pose.x == pytest.approx(0.0)  # clamped to the first odometry pose
    assert s.data.shape == (2,) and set(s.data.dtype.names) >= {"x", "y", "z", "intensity", "ring"}  # NaN dropped
    cam = by[Modality.CAMERA][3].data
    assert cam.shape == (24, 32, 3) and cam.dtype == np.uint8 and (cam[..., 0] == 200).all() and cam[0, 0, 2] == 30
    rad = by[Modality.RADAR][5].data
    assert rad.dtype.names == ("x", "y", "z", "doppler", "rcs") and (rad["rcs"] == 5).all()
    # receive order
    assert [x.stamp_ns for x in samples] == sorted(x.stamp_ns for x in samples)


def test_raw_image_renamed_topics_and_radar_fields(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, radar_names=("px", "py", "pz", "vr", "power"), raw_camera=True, odom_topic="/ego/odom",
              lidar_topic="/velodyne_points")
    topics = BagTopics(camera="/camera/image", lidar="/velodyne_points", odom="/ego/odom",
                       radar_fields=("px", "py", "pz", "vr", "power"))
    samples = list(read_samples(bag, topics, modalities=["camera", "radar"]))
    assert {s.modality for s in samples} == {Modality.CAMERA, Modality.RADAR}
    cam = next(s for s in samples if s.modality is Modality.CAMERA).data
    assert (cam[..., 0] == 200).all()  # bgr8 converted to RGB
    rad = next(s for s in samples if s.modality is Modality.RADAR).data
    assert (rad["doppler"] == -3).all()
    with pytest.raises(ConversionError, match="radar field for .x. missing"):
        list(read_samples(bag, BagTopics(odom="/ego/odom", lidar="/velodyne_points"), modalities=["radar"]))


def test_missing_topics_and_odometry(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, odom=False)
    with pytest.raises(BagError, match="no odometry topic /odom"):
        list(read_samples(bag))
    samples = list(read_samples(bag, modalities=["lidar"], require_pose=False))
    assert len(samples) == 10 and all(s.pose is None for s in samples)
    with pytest.raises(BagError, match="no lidar topic /other"):
        list(read_samples(bag, BagTopics(lidar="/other"), require_pose=False))
    with pytest.raises(BagError, match="no such bag"):
        list(read_samples(tmp_path / "nope"))


def test_pose_track_gaps(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag)
    track = read_pose_track(bag)
    assert len(track) == 21
    assert track.lookup(500_000_000) is None  # 0.5 s before the first odometry
    assert track.lookup(3_100_000_000).x == pytest.approx(2.0)
    assert track.lookup(3_300_000_000) is None


@pytest.mark.parametrize(
    "kwargs, key",
    [({"lidar": "lidar/points"}, "topics.lidar"), ({"radar_fields": ("x", "y")}, "radar_fields"),
     ({"camera": ()}, "topics.camera"), ({"max_gap_ns": -1}, "max_gap_ns"), ({"max_extrapolation_ns": 0.5}, "max_extrapolation_ns")],
)
def test_topics_validation(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        BagTopics(**kwargs)


def test_rejected_messages_are_skipped_and_counted_by_training_and_evaluation(tmp_path: Path) -> None:
    """An empty radar scan (a radar that saw nothing) stops nothing when the caller counts rejections: read_samples,
    the training frames and the evaluation embeddings skip it and count it per topic; without counting it raises."""
    from cmr_fusion_ros.bag.reader import count_rejected
    from cmr_fusion_ros.core.encoder import load_encoders
    from cmr_fusion_ros.eval.evaluate import embed_bag

    write_bag(tmp_path / "full")
    write_bag(tmp_path / "gap", empty_radar=(5,))
    with pytest.raises(ConversionError, match="0 points"):
        list(read_samples(tmp_path / "gap", modalities=[Modality.RADAR]))
    rejected: dict[str, int] = {}
    got = list(read_samples(tmp_path / "gap", modalities=[Modality.RADAR], on_bad=count_rejected(rejected)))
    full = list(read_samples(tmp_path / "full", modalities=[Modality.RADAR]))
    assert rejected == {"/radar/points: sensor_msgs/PointCloud2.height/width": 1}
    assert len(got) == len(full) - 1 and 1_800_000_000 not in {s.stamp_ns for s in got}

    encoders = load_encoders(Path(__file__).resolve().parents[2] / "models")
    counted: dict[str, int] = {}
    emb = embed_bag(tmp_path / "gap", {Modality.RADAR: encoders[Modality.RADAR]}, rejected=counted)
    assert counted == rejected and len(emb.embeddings[Modality.RADAR]) == len(full) - 1
    with pytest.raises(ConversionError):
        embed_bag(tmp_path / "gap", {Modality.RADAR: encoders[Modality.RADAR]})

    pytest.importorskip("torch")
    from cmr_fusion_ros.training.dataset import frames_from_bag
    from tests.unit.test_training import SMALL

    counted = {}
    frames = frames_from_bag(tmp_path / "gap", SMALL, rejected=counted)
    assert counted == rejected and len(frames) == len(frames_from_bag(tmp_path / "full", SMALL)) - 1
