"""fusion_node in-process: sensor messages in, MatchEventArray / markers / diagnostics / services out."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, Quaternion
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from cmr_fusion_msgs.msg import MatchEventArray
from cmr_fusion_msgs.srv import ClearMemory, QueryMemory, SaveMemory
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import array_to_pointcloud2, make_header, numpy_to_compressed, stamp_to_ns
from cmr_fusion_ros.ros.fusion_node import FusionNode

S = 1_000_000_000
DIM = 32


class PlaceFromData:
    """Stand-in encoder: camera frames carry their place as pixel value, clouds as the x of their points."""

    dim = DIM

    def encode(self, items):
        out = []
        for data in items:
            place = int(round(float(data["x"].mean()))) if data.dtype.names else int(round(float(data.mean()) / 10))
            v = np.random.default_rng(place).normal(size=DIM)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


@pytest.fixture()
def graph(tmp_path):
    rclpy.init()
    overrides = [
        Parameter("memory.dim", value=DIM),
        Parameter("memory.persistence.directory", value=str(tmp_path / "memory")),
        Parameter("memory.admission.enabled", value=False),
        Parameter("policy.exclude_recent_s", value=20),  # an int for a float parameter is accepted
        Parameter("policy.min_score", value=0.9),
        Parameter("streams.radar.enabled", value=False),
        Parameter("streams.camera.reliability", value="reliable"),
        Parameter("streams.lidar.reliability", value="reliable"),
        Parameter("sync.time_jump_s", value=3),  # an int for a float parameter is accepted
        Parameter("limits.max_points", value=100),  # the test clouds have 50 points
        Parameter("output.diagnostics_period_s", value=0.2),
    ]
    # Build the node with a stand-in pipeline: the same config, the real memory and policy.
    probe = rclpy.create_node("probe_config", parameter_overrides=overrides)
    from cmr_fusion_ros.ros.params import declare_fusion_parameters

    config = declare_fusion_parameters(probe)
    probe.destroy_node()
    memory = SceneMemory.open(config.memory.persistence.directory, config.memory)
    pipeline = FusionPipeline(config, {Modality.CAMERA: PlaceFromData(), Modality.LIDAR: PlaceFromData()}, memory,
                              poses=PoseBuffer(), session="test")
    node = FusionNode(pipeline=pipeline, parameter_overrides=overrides)
    peer = rclpy.create_node("peer")
    got = {"matches": [], "markers": [], "diag": []}
    peer.create_subscription(MatchEventArray, "/fusion_node/matches", got["matches"].append, 10)
    peer.create_subscription(MarkerArray, "/fusion_node/markers", got["markers"].append, 10)
    peer.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(peer)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    yield node, peer, got
    ex.shutdown()
    node.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.try_shutdown()


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def cloud_at(place: int) -> np.ndarray:
    pts = np.zeros(50, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    pts["x"] = place
    return pts


def test_matches_markers_diagnostics_and_services(graph):
    node, peer, got = graph
    lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
    camera = peer.create_publisher(__import__("sensor_msgs.msg", fromlist=["CompressedImage"]).CompressedImage,
                                   "/camera/image/compressed", 10)
    odom = peer.create_publisher(Odometry, "/odom", 10)
    assert wait_for(lambda: lidar.get_subscription_count() and camera.get_subscription_count()
                    and odom.get_subscription_count())

    def send(t_s: float, place: int, x: float, *, cam=True, bad=False):
        t = round(t_s * S)
        o = Odometry(header=make_header(t, "odom"), child_frame_id="base_link")
        o.pose.pose.position = Point(x=x)
        o.pose.pose.orientation = Quaternion(w=1.0)
        odom.publish(o)
        time.sleep(0.02)
        msg = array_to_pointcloud2(cloud_at(place), make_header(t, "lidar"))
        if bad:
            msg.point_step = 3  # malformed: fields beyond point_step
        lidar.publish(msg)
        if cam:
            img = np.full((8, 8, 3), place * 10, np.uint8)
            camera.publish(numpy_to_compressed(img, "rgb8", make_header(t, "camera_optical_frame"), fmt="png"))
        time.sleep(0.05)

    for i in range(5):
        send(float(i), i, 10.0 * i)
    send(5.0, 0, 0.0, bad=True)  # a malformed cloud: counted, the node goes on
    send(60.0, 3, 31.0)           # revisit of place 3, 1 m away
    send(61.0, 9, 200.0)          # a new place
    assert wait_for(lambda: len(got["matches"]) >= 2)  # one message per frame with events: the LiDAR scan, the image
    assert [stamp_to_ns(arr.header.stamp) for arr in got["matches"]] == [60 * S, 60 * S]
    events = [e for arr in got["matches"] for e in arr.events]
    pairs = sorted((e.query_modality, e.match_modality) for e in events)
    assert pairs == [("camera", "lidar"), ("lidar", "camera")]
    for e in events:
        assert stamp_to_ns(e.match_stamp) == 3 * S and e.score > 0.99 and e.query_id > 0 and e.match_id > 0
        assert e.query_pose_valid and e.match_pose_valid and math.isclose(e.distance, 1.0, abs_tol=1e-6)
        assert e.header.frame_id == ("camera_optical_frame" if e.query_modality == "camera" else "lidar")
        assert e.match_topic == ("/lidar/points" if e.match_modality == "lidar" else "/camera/image/compressed")
        assert e.pose_frame_id == "odom" and e.match_session == "test"  # the odometry's frame, the entry's session
        assert math.isnan(e.probability)  # stand-in encoders have no card: no calibration
    assert wait_for(lambda: sum(len(m.markers) for m in got["markers"]) == 4)  # a line and a label per event
    assert wait_for(lambda: any(node.stats[Modality.LIDAR].bad_messages for _ in [0]))

    def status(suffix):  # the newest diagnostic status whose name ends so, as a dict
        for d in reversed(got["diag"]):
            for st in d.status:
                if st.name.endswith(suffix):
                    return {kv.key: kv.value for kv in st.values}
        return None

    assert wait_for(lambda: (status("stream lidar") or {}).get("bad_messages") == "1")
    # the default routes: LiDAR does not search LiDAR, each scan is embedded once
    assert wait_for(lambda: status(": memory") is not None) and status(": memory")["lidar_views"] == "1"
    assert status(": memory")["providers"] == ""  # stand-in encoders report none (ONNX ones: test_encoder.py)

    # services
    def call(srv_type, name, **fields):
        client = peer.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=5.0)
        fut = client.call_async(srv_type.Request(**fields))
        assert wait_for(fut.done)
        return fut.result()

    vec = PlaceFromData().encode([cloud_at(3)])[0]
    res = call(QueryMemory, "/fusion_node/query_memory", vector=vec.tolist(), modalities=["lidar"], k=2, min_score=0.0)
    assert res.success and res.matches[0].match_modality == "lidar" and res.matches[0].score > 0.999
    assert res.matches[0].match_session == "test" and res.matches[0].pose_frame_id == "odom"
    res = call(SaveMemory, "/fusion_node/save_memory", path="")
    assert res.success and res.entries == len(node.pipeline.memory) == 15  # 8 camera (t=0..5, 60, 61) + 7 LiDAR
    res = call(ClearMemory, "/fusion_node/clear_memory", modalities=["camera"])
    assert res.success and res.removed == 8 and len(node.pipeline.memory) == 7


def test_runtime_tuning_and_read_only_parameters(graph):
    node, _, _ = graph
    ok = node.set_parameters([Parameter("policy.min_score", value=0.75)])[0]
    assert ok.successful and node.pipeline.policy.config.min_score == 0.75
    bad = node.set_parameters([Parameter("policy.top_k", value=0)])[0]
    assert not bad.successful and "policy.top_k" in bad.reason and node.pipeline.policy.config.top_k == 5
    ro = node.set_parameters([Parameter("memory.dim", value=64)])[0]
    assert not ro.successful
    desc = node.describe_parameter("policy.min_score")
    assert "threshold" in desc.description and desc.floating_point_range[0].from_value == -1.0


def test_configured_limits_and_time_jump(graph):
    node, peer, _ = graph
    assert node.config.limits.max_points == 100 and node.config.limits.max_image_pixels == 4096 * 4096
    assert node.pipeline.jump_back_ns == 3 * S
    for name in ("limits.max_points", "sync.time_jump_s"):
        assert node.describe_parameter(name).read_only
    assert node.get_parameter("sync.time_jump_s").value == 3.0
    assert not node.set_parameters([Parameter("limits.max_points", value=10)])[0].successful
    lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
    assert wait_for(lambda: lidar.get_subscription_count())
    big = np.zeros(150, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    lidar.publish(array_to_pointcloud2(big, make_header(S, "lidar")))  # over the configured limit: counted
    assert wait_for(lambda: node.stats[Modality.LIDAR].bad_messages == 1)
    assert "150x1 = 150 points; allowed 0..100" in node._last_bad[Modality.LIDAR]
    lidar.publish(array_to_pointcloud2(cloud_at(1), make_header(2 * S, "lidar")))  # the node goes on
    assert wait_for(lambda: node.stats[Modality.LIDAR].processed == 1)
    assert node.stats[Modality.LIDAR].bad_messages == 1 and node.streams[Modality.LIDAR].worker.is_alive()
