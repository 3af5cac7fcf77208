"""Split deployment in-process: encoder_node (LiDAR, camera) -> Embedding -> memory_node -> MatchEventArray."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2

from cmr_fusion_msgs.msg import Embedding, MatchEventArray
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import array_to_pointcloud2, make_header, stamp_to_ns
from cmr_fusion_ros.ros.encoder_node import EncoderNode
from cmr_fusion_ros.ros.memory_node import MemoryNode
from tests.ros.test_fusion_node import DIM, PlaceFromData, cloud_at, wait_for
from tests.unit.test_pipeline import FlatEncoder

S = 1_000_000_000


def test_encoder_and_memory_nodes(tmp_path):
    rclpy.init()
    nodes = []
    try:
        common = [Parameter("streams.lidar.reliability", value="reliable"),
                  Parameter("streams.radar.reliability", value="reliable")]
        lidar_enc = EncoderNode("lidar_encoder", encoder=PlaceFromData(),
                                parameter_overrides=[Parameter("modality", value="lidar"), *common])
        # a second "modality" on another topic, to have a cross-modal pair: radar clouds carry the place too
        radar_enc = EncoderNode("radar_encoder", encoder=PlaceFromData(),
                                parameter_overrides=[Parameter("modality", value="radar"), *common,
                                                     Parameter("streams.radar.fields.rcs", value="")])
        memory, peer, got, embeddings = _memory_and_peer(DIM, 0.9)
        nodes = [lidar_enc, radar_enc, memory, peer]
        lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
        radar = peer.create_publisher(PointCloud2, "/radar/points", 10)
        ex = _spin(nodes)
        assert wait_for(lambda: lidar.get_subscription_count() and radar.get_subscription_count())

        def radar_cloud(place):
            c = np.zeros(20, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("doppler", "f4")])
            c["x"] = place
            return c

        for t, place in [(0, 1), (1, 2), (2, 3)]:
            lidar.publish(array_to_pointcloud2(cloud_at(place), make_header(t * S, "lidar")))
            radar.publish(array_to_pointcloud2(radar_cloud(place + 10), make_header(t * S, "radar")))
            time.sleep(0.05)
        radar.publish(array_to_pointcloud2(radar_cloud(2), make_header(30 * S, "radar")))  # radar sees place 2 again
        assert wait_for(lambda: got, timeout=10)
        ev = got[0].events[0]
        assert (ev.query_modality, ev.match_modality) == ("radar", "lidar")
        assert stamp_to_ns(ev.match_stamp) == 1 * S and ev.score > 0.99
        assert {e.modality for e in embeddings} == {"lidar", "radar"}
        assert all(len(e.vector) == DIM and e.model_id.startswith(e.modality) for e in embeddings)
        ex.shutdown()
    finally:
        _close(nodes)


def test_encoder_node_limits_and_memory_node_time_jump():
    rclpy.init()
    nodes = []
    try:
        enc = EncoderNode("lidar_encoder", encoder=PlaceFromData(), parameter_overrides=[
            Parameter("modality", value="lidar"), Parameter("streams.lidar.reliability", value="reliable"),
            Parameter("limits.max_points", value=40)])
        memory = MemoryNode("memory_node", parameter_overrides=[
            Parameter("memory.dim", value=DIM), Parameter("odometry.topic", value=""),
            Parameter("sync.time_jump_s", value=2.5)])
        peer = rclpy.create_node("peer")
        nodes = [enc, memory, peer]
        assert enc.config.limits.max_points == 40 and enc.describe_parameter("limits.max_points").read_only
        assert memory.pipeline.jump_back_ns == 2_500_000_000
        embeddings: list[Embedding] = []
        peer.create_subscription(Embedding, "/embeddings", embeddings.append, 50)
        lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
        ex = _spin(nodes)
        assert wait_for(lambda: lidar.get_subscription_count())
        lidar.publish(array_to_pointcloud2(cloud_at(1), make_header(S, "lidar")))  # 50 points > 40: counted
        assert wait_for(lambda: enc.stats.bad_messages == 1)
        small = cloud_at(2)[:30]
        lidar.publish(array_to_pointcloud2(small, make_header(2 * S, "lidar")))  # within the limit: encoded
        assert wait_for(lambda: embeddings, timeout=10)
        assert enc.stats.processed == 1 and [stamp_to_ns(e.header.stamp) for e in embeddings] == [2 * S]
        ex.shutdown()
    finally:
        _close(nodes)


def _memory_and_peer(dim: int, min_score: float, *extra: Parameter):
    """A memory node (no admission, 10 s exclusion, no odometry) and a peer node collecting its match events and
    the embeddings on /embeddings."""
    memory = MemoryNode("memory_node", parameter_overrides=[
        Parameter("memory.dim", value=dim), Parameter("memory.admission.enabled", value=False),
        Parameter("policy.exclude_recent_s", value=10.0), Parameter("policy.min_score", value=min_score),
        Parameter("odometry.topic", value=""), *extra])
    peer = rclpy.create_node("peer")
    got: list[MatchEventArray] = []
    embeddings: list[Embedding] = []
    peer.create_subscription(MatchEventArray, "/memory_node/matches", got.append, 10)
    peer.create_subscription(Embedding, "/embeddings", embeddings.append, 50)
    return memory, peer, got, embeddings


def _spin(nodes) -> SingleThreadedExecutor:
    """Spin the nodes in a background thread; ``shutdown()`` the executor returned when done."""
    ex = SingleThreadedExecutor()
    for n in nodes:
        ex.add_node(n)
    threading.Thread(target=ex.spin, daemon=True).start()
    return ex


def _close(nodes) -> None:
    for n in nodes:
        if hasattr(n, "shutdown"):
            n.shutdown()
        n.destroy_node()
    rclpy.try_shutdown()


def test_encoder_node_merges_radar_scans_with_the_odometry():
    """A multi-scan radar model: the node follows the odometry and encodes each scan merged with the scans 0.5 s and
    1.0 s before it, moved into its frame; without an odometry topic it refuses to start."""
    from nav_msgs.msg import Odometry

    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.core.preprocess import RadarBevPreprocessing
    from cmr_fusion_ros.core.radar import RADAR_DTYPE

    class MultiScan(PlaceFromData):
        preprocessing = RadarBevPreprocessing(scans=3)

        def __init__(self):
            self.seen = []

        def encode(self, items):
            self.seen.extend(items)
            return super().encode(items)

    rclpy.init()
    nodes = []
    try:
        radar = [Parameter("modality", value="radar"), Parameter("streams.radar.reliability", value="reliable")]
        with pytest.raises(ConfigError, match="odometry.topic"):
            EncoderNode("radar_encoder", encoder=MultiScan(), parameter_overrides=[
                *radar, Parameter("odometry.topic", value="")])
        enc_model = MultiScan()
        enc = EncoderNode("radar_encoder", encoder=enc_model, parameter_overrides=radar)
        peer = rclpy.create_node("peer")
        nodes = [enc, peer]
        odom = peer.create_publisher(Odometry, "/odom", 100)
        pub = peer.create_publisher(PointCloud2, "/radar/points", 10)
        ex = _spin(nodes)
        assert wait_for(lambda: pub.get_subscription_count() and odom.get_subscription_count())
        for i in range(21):  # odometry: 10 m/s along x, 0..2 s
            msg = Odometry()
            msg.header = make_header(S + i * S // 10, "odom")
            msg.pose.pose.position.x = float(i)
            msg.pose.pose.orientation.w = 1.0
            odom.publish(msg)
        assert wait_for(lambda: len(enc.merger.poses) == 21)
        for k in range(5):  # a static reflector 30 m ahead of the start, scans every 0.5 s
            t = S + k * S // 2
            pts = np.zeros(1, RADAR_DTYPE)
            pts["x"] = 30.0 - 5.0 * k
            pub.publish(array_to_pointcloud2(pts, make_header(t, "radar")))
            assert wait_for(lambda: len(enc_model.seen) == k + 1)
        sizes = [len(x) for x in enc_model.seen]
        assert sizes == [1, 2, 3, 3, 3]
        assert all(np.allclose(x["x"], 30.0 - 5.0 * k) for k, x in enumerate(enc_model.seen))  # all on the reflector
        assert enc._values()["scans_merged"] == 0 + 1 + 2 + 2 + 2 and enc._values()["scans_missing"] == 2 + 1
        ex.shutdown()
    finally:
        _close(nodes)


def test_lidar_views_travel_from_encoder_node_to_memory_node():
    """A LiDAR encoder node with encoders.lidar_views 4 sends the scan at 3 more headings (Embedding.views); the
    memory node, whose LiDAR queries search LiDAR, finds the place driven at right angles through them; Embedding.views
    that are not whole views are a counted bad message."""
    rclpy.init()
    nodes = []
    try:
        enc = FlatEncoder()
        lidar_enc = EncoderNode("lidar_encoder", encoder=enc, parameter_overrides=[
            Parameter("modality", value="lidar"), Parameter("streams.lidar.reliability", value="reliable"),
            Parameter("encoders.lidar_views", value=4)])
        memory, peer, got, embeddings = _memory_and_peer(
            enc.dim, 0.98, Parameter("policy.routes.lidar", value=["lidar"]),
            Parameter("policy.turned_view_penalty", value=0.01))
        nodes = [lidar_enc, memory, peer]
        lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
        direct = peer.create_publisher(Embedding, "/embeddings", 10)
        ex = _spin(nodes)
        assert wait_for(lambda: lidar.get_subscription_count() and direct.get_subscription_count())
        rng = np.random.default_rng(2)
        scan = np.zeros(300, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
        scan["x"], scan["y"] = rng.uniform(-38, 38, 300), rng.uniform(-38, 38, 300)
        scan["z"], scan["intensity"] = rng.uniform(-2, 6, 300), rng.uniform(0, 255, 300)
        right = scan.copy()  # the same place, the sensor turned right by 90 deg
        right["x"], right["y"] = -scan["y"], scan["x"]
        lidar.publish(array_to_pointcloud2(scan, make_header(0, "lidar")))
        assert wait_for(lambda: len(embeddings) == 1)
        lidar.publish(array_to_pointcloud2(right, make_header(30 * S, "lidar")))
        assert wait_for(lambda: got, timeout=10), f"embeddings {len(embeddings)}, memory stats {memory.stats}"
        assert all(len(e.views) == 3 * len(e.vector) == 3 * enc.dim for e in embeddings)
        ev = got[0].events[0]
        assert stamp_to_ns(ev.match_stamp) == 0 and stamp_to_ns(ev.header.stamp) == 30 * S
        assert ev.score == pytest.approx(0.99, abs=1e-5)  # found by a turned view: 1 - penalty
        bad = Embedding(header=make_header(40 * S, "lidar"), modality="lidar", source_topic="/lidar/points")
        bad.vector = [1.0] * enc.dim
        bad.views = [1.0] * 5
        direct.publish(bad)
        assert wait_for(lambda: memory.stats[Modality.LIDAR].bad_messages == 1)
        ex.shutdown()
    finally:
        _close(nodes)
