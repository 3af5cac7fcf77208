"""Offline processing of a bag: the same pipeline, events to JSONL and an mcap bag that rosbags reads back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cmr_fusion_ros.bag.events import typestore_with_events
from cmr_fusion_ros.bag.offline import process_bags, resolve_topic
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.pointcloud import encode_cloud
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Modality

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


def write_bag(path, schedule, storage=StoragePlugin.MCAP):
    """LiDAR and radar clouds whose x is the place number, plus odometry at the given positions; an entry
    (t_s, place, x, log_s) is stamped t_s but logged at log_s (default t_s)."""
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    with Writer(path, version=9, storage_plugin=storage) as w:
        lid = w.add_connection("/lidar/points", "sensor_msgs/msg/PointCloud2", typestore=ts)
        rad = w.add_connection("/radar/points", "sensor_msgs/msg/PointCloud2", typestore=ts)
        odo = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=ts)
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
                                   "memory": {"dim": DIM, "admission": {"enabled": False}},
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
    store = typestore_with_events()
    with AnyReader([tmp_path / "out" / "matches"], default_typestore=store) as reader:
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
        assert [c.topic for c in reader.connections] == ["/fusion_node/matches"]
    assert [len(m.events) for m in msgs] == [1, 1]  # one message per frame with events (LiDAR, then radar)
    assert {e.match_id for m in msgs for e in m.events} == {e["match_id"] for e in lines}
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


def test_configured_limits_and_time_jump(tmp_path):
    """``limits.*`` and ``sync.time_jump_s`` from the config reach offline processing: clouds over a smaller limit
    are counted as bad messages (the run goes on), and a longer threshold keeps a 3 s step back in one time line."""
    bag = tmp_path / "in"
    # 30-point clouds; the last pair is logged after the others but stamped 3 s back
    write_bag(bag, [(t, t, 10.0 * t) for t in range(10, 16)] + [(12.0, 2, 20.0, 16.0)])
    base = config().to_dict()
    default = process_bags([bag], config(), pipeline=pipeline(config()), progress=False)
    assert default.bad_messages == 0 and default.time_jumps == 1
    small = FusionConfig.from_dict({**base, "limits": {"max_points": 29}})
    summary = process_bags([bag], small, pipeline=pipeline(small), progress=False)
    assert summary.bad_messages == 14 and summary.frames == {"lidar": 0, "radar": 0}
    longer = FusionConfig.from_dict({**base, "sync": {"time_jump_s": 5.0}})
    summary = process_bags([bag], longer, pipeline=pipeline(longer), progress=False)
    assert summary.bad_messages == 0 and summary.time_jumps == 0 and summary.frames == {"lidar": 7, "radar": 7}
