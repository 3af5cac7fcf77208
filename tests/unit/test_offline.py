"""Offline processing of a bag: the same pipeline, events to JSONL and an mcap bag that rosbags reads back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cmr_fusion_ros.bag.events import typestore_with_events
from cmr_fusion_ros.bag.offline import process_bags, resolve_topic
from cmr_fusion_ros.bag.writer import tf_message, transform_msg
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.pointcloud import encode_cloud
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.core.workers import FORK_AVAILABLE

S = 1_000_000_000
DIM = 32


class PlaceFromCloud:
    dim = DIM

    def encode(self, items):
        out = []
        for c in items:
            v = np.random.default_rng(int(round(float(c["x"].mean())))).normal(size=DIM)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


LATCHED = Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
              durability=QosDurability.TRANSIENT_LOCAL, deadline=QosTime(0, 0), lifespan=QosTime(0, 0),
              liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=QosTime(0, 0),
              avoid_ros_namespace_conventions=False)


def write_bag(path, schedule, storage=StoragePlugin.MCAP):
    """LiDAR and radar clouds whose x is the place number, plus odometry at the given positions; an entry
    (t_s, place, x, log_s) is stamped t_s but logged at log_s (default t_s)."""
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    with Writer(path, version=9, storage_plugin=storage) as w:
        lid = w.add_connection("/lidar/points", "sensor_msgs/msg/PointCloud2", typestore=ts)
        rad = w.add_connection("/radar/points", "sensor_msgs/msg/PointCloud2", typestore=ts)
        odo = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=ts)
        tf = w.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts)
        tf_static = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts,
                                     offered_qos_profiles=[LATCHED])
        w.write(tf_static, 0, ts.serialize_cdr(tf_message(ts, [transform_msg(ts, 0, "base_link", "lidar", (1, 0, 2),
                                                                                (0, 0, 0, 1))]), "tf2_msgs/msg/TFMessage"))
        for t_s, place, x, *log_s in schedule:
            t = round(t_s * S)
            log = round(log_s[0] * S) if log_s else t
            stamp = T["builtin_interfaces/msg/Time"](sec=t // S, nanosec=t % S)
            odom = T["nav_msgs/msg/Odometry"](
                header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="odom"), child_frame_id="base_link",
                pose=T["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=x, y=0.0, z=0.0),
                                                     orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                    covariance=np.zeros(36)),
                twist=T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                                       angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36)))
            w.write(odo, log, ts.serialize_cdr(odom, "nav_msgs/msg/Odometry"))
            w.write(tf, log, ts.serialize_cdr(tf_message(ts, [transform_msg(ts, t, "odom", "base_link", (x, 0, 0),
                                                                            (0, 0, 0, 1))]), "tf2_msgs/msg/TFMessage"))
            for conn, frame, fields in ((lid, "lidar", ("x", "y", "z", "intensity")), (rad, "radar", ("x", "y", "z", "doppler", "rcs"))):
                pts = np.zeros(30, dtype=[(f, "f4") for f in fields])
                pts["x"] = place
                wire = encode_cloud(pts)
                msg = T["sensor_msgs/msg/PointCloud2"](
                    header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame), height=wire.height, width=wire.width,
                    fields=[T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                            for f in wire.fields],
                    is_bigendian=False, point_step=wire.point_step, row_step=wire.row_step,
                    data=np.frombuffer(wire.data, np.uint8), is_dense=True)
                w.write(conn, log + 1000, ts.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))


def config():
    return FusionConfig.from_dict({"streams": {"camera": {"enabled": False}},
                                   "memory": {"dim": DIM, "admission": {"enabled": False}, "robot_id": "car1"},
                                   "policy": {"min_score": 0.9, "exclude_recent_s": 20.0}})


def pipeline(cfg):
    return FusionPipeline(cfg, {Modality.LIDAR: PlaceFromCloud(), Modality.RADAR: PlaceFromCloud()},
                          SceneMemory(cfg.memory), poses=PoseBuffer(), session="offline")


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_offline_events_jsonl_and_bag(tmp_path, storage):
    bag = tmp_path / "in"
    write_bag(bag, [(t, t, 10.0 * t) for t in range(6)] + [(60.0, 2, 21.5), (61.0, 8, 300.0)], storage)
    cfg = config()
    summary = process_bags([bag], cfg, pipeline=pipeline(cfg), out_dir=tmp_path / "out", progress=False)
    assert summary.frames == {"lidar": 8, "radar": 8} and summary.bad_messages == 0
    assert summary.events == 2 and summary.true_events == 2 and summary.memory_entries == 16
    lines = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert {(e["query_modality"], e["match_modality"]) for e in lines} == {("lidar", "radar"), ("radar", "lidar")}
    assert all(e["match_stamp_ns"] == 2 * S and e["distance"] == pytest.approx(1.5) for e in lines)
    assert all(e["pose_frame_id"] == "odom" and e["match_session"] == "offline" for e in lines)
    store = typestore_with_events()
    with AnyReader([tmp_path / "out" / "matches"], default_typestore=store) as reader:
        got: dict[str, list] = {}
        for c, stamp, raw in reader.messages():
            got.setdefault(c.topic, []).append((stamp, reader.deserialize(raw, c.msgtype)))
        latched = {c.topic: c.ext.offered_qos_profiles[0].durability.name for c in reader.connections
                   if c.ext.offered_qos_profiles}
    # the matches (one message per frame with events: LiDAR, then radar), the markers the node would publish, and
    # the trajectory of the input bag (a 3D view in Foxglove)
    assert {t: len(v) for t, v in got.items()} == {"/fusion_node/matches": 2, "/fusion_node/markers": 2,
                                                   "/odom": 8, "/tf": 8, "/tf_static": 1}
    assert summary.copied == {"/odom": 8, "/tf": 8, "/tf_static": 1} and latched["/tf_static"] == "TRANSIENT_LOCAL"
    arrays = [arr for _, arr in got["/fusion_node/matches"]]
    assert [len(arr.events) for arr in arrays] == [1, 1]
    assert {e.match_id for arr in arrays for e in arr.events} == {e["match_id"] for e in lines}
    assert {(e.pose_frame_id, e.match_session) for arr in arrays for e in arr.events} == {("odom", "offline")}
    assert {(e["match_robot"], e["match_session"]) for e in lines} == {("car1", "offline")}
    assert {(e.match_robot, e.match_session) for arr in arrays for e in arr.events} == {("car1", "offline")}
    marks = [m for _, arr in got["/fusion_node/markers"] for m in arr.markers]
    lines_mk = [m for m in marks if m.type == 5]  # LINE_LIST: query -> match
    assert len(marks) == 4 and len(lines_mk) == 2 and all(m.header.frame_id == "odom" for m in marks)
    assert sorted(round(p.x, 3) for m in lines_mk for p in m.points) == [20.0, 20.0, 21.5, 21.5]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["events"] == 2


def test_missing_topics_and_bags_are_clear_errors(tmp_path):
    bag = tmp_path / "in"
    write_bag(bag, [(0, 0, 0.0)])
    cfg = FusionConfig.from_dict({"streams": {"camera": {"enabled": False}, "lidar": {"topic": "velodyne_points"},
                                              "radar": {"topic": "front_radar"}}, "memory": {"dim": DIM}})
    with pytest.raises(BagError, match=r"none of the configured topics \['/front_radar', '/velodyne_points'\]"):
        process_bags([bag], cfg, pipeline=pipeline(cfg), progress=False)
    with pytest.raises(BagError, match="no such bag"):
        process_bags([tmp_path / "nope"], cfg, pipeline=pipeline(cfg), progress=False)


def test_resolve_topic():
    assert resolve_topic("lidar/points") == "/lidar/points"
    assert resolve_topic("lidar/points", "/car1") == "/car1/lidar/points"
    assert resolve_topic("/abs", "/car1") == "/abs"


@pytest.mark.parametrize("look_ahead", [0, 32])
def test_configured_limits_and_time_jump(tmp_path, look_ahead):
    """``limits.*`` and ``sync.time_jump_s`` from the config reach offline processing: clouds over a smaller limit
    are counted as bad messages (the run goes on), and a longer threshold keeps a 3 s step back in one time line
    (decoded and embedded in this thread, or ahead in a thread per topic)."""
    bag = tmp_path / "in"
    # 30-point clouds; the last pair is logged after the others but stamped 3 s back
    write_bag(bag, [(t, t, 10.0 * t) for t in range(10, 16)] + [(12.0, 2, 20.0, 16.0)])
    base = config().to_dict()
    default = process_bags([bag], config(), pipeline=pipeline(config()), progress=False, look_ahead=look_ahead)
    assert default.bad_messages == 0 and default.time_jumps == 1
    small = FusionConfig.from_dict({**base, "limits": {"max_points": 29}})
    summary = process_bags([bag], small, pipeline=pipeline(small), progress=False, look_ahead=look_ahead)
    assert summary.bad_messages == 14 and summary.frames == {"lidar": 0, "radar": 0}
    longer = FusionConfig.from_dict({**base, "sync": {"time_jump_s": 5.0}})
    summary = process_bags([bag], longer, pipeline=pipeline(longer), progress=False, look_ahead=look_ahead)
    assert summary.bad_messages == 0 and summary.time_jumps == 0 and summary.frames == {"lidar": 7, "radar": 7}


def test_look_ahead_embeds_in_a_worker_process_per_topic(tmp_path):
    """Look-ahead 0 decodes and embeds every frame in the calling process; look-ahead N in a forked worker per
    sensor topic, with the same events, and the summary says so."""
    bag = tmp_path / "in"
    write_bag(bag, [(t, t, 10.0 * t) for t in range(6)] + [(60.0, 2, 21.5), (61.0, 8, 300.0)])
    seen = {}
    for n in (0, 4):
        cfg = config()
        summary = process_bags([bag], cfg, pipeline=pipeline(cfg), out_dir=tmp_path / f"out{n}", progress=False,
                               look_ahead=n)
        seen[n] = (summary.worker_processes, (tmp_path / f"out{n}" / "events.jsonl").read_text(), summary.events)
    assert seen[0][0] == 0 and seen[4][0] == (2 if FORK_AVAILABLE else 0)  # /lidar/points and /radar/points
    assert seen[4][1:] == seen[0][1:] and seen[0][2] == 2
    # encoders with several onnxruntime threads cannot run in a forked child: the same steps in this process
    threaded = FusionConfig.from_dict({**config().to_dict(), "encoders": {"intra_op_threads": 2}})
    summary = process_bags([bag], threaded, pipeline=pipeline(threaded), out_dir=tmp_path / "out_threads",
                           progress=False, look_ahead=4)
    assert summary.worker_processes == 0 and summary.look_ahead == 4
    assert (tmp_path / "out_threads" / "events.jsonl").read_text() == seen[0][1]
