"""Two memory nodes in two namespaces (two robots) share one PostgreSQL memory: car2 matches what car1 saw, and the
events name car1 and its session (real server, started in tmp_path)."""

from __future__ import annotations

import time

import numpy as np
import rclpy
from rclpy.parameter import Parameter

from cmr_fusion_msgs.msg import Embedding, MatchEventArray
from cmr_fusion_ros.ros.conversions import make_header
from cmr_fusion_ros.ros.memory_node import MemoryNode
from tests.pg_server import pg_server, pg_uri  # noqa: F401
from tests.ros.test_fusion_node import wait_for
from tests.ros.test_split_nodes import _spin

DIM = 16
S = 1_000_000_000


def _robot(ns: str, uri: str) -> MemoryNode:
    return MemoryNode("memory_node", namespace=ns, parameter_overrides=[
        Parameter("memory.dim", value=DIM), Parameter("memory.store", value="postgres"),
        Parameter("memory.postgres.uri", value=uri), Parameter("memory.admission.enabled", value=False),
        Parameter("policy.exclude_recent_s", value=10.0), Parameter("policy.min_score", value=0.9),
        Parameter("policy.match_robots", value="others"), Parameter("session", value=f"{ns.strip('/')}_drive"),
        Parameter("odometry.topic", value="")])


def _embedding(modality: str, vec: np.ndarray, t_s: float) -> Embedding:
    return Embedding(header=make_header(int(t_s * S), modality), modality=modality, source_topic=f"/{modality}",
                     model_id=f"{modality}_test", vector=(vec / np.linalg.norm(vec)).astype(np.float32).tolist())


def test_two_robots_share_one_memory(pg_uri):
    rclpy.init()
    nodes = []
    try:
        car1, car2 = _robot("/car1", pg_uri), _robot("/car2", pg_uri)
        assert (car1.pipeline.memory.robot, car2.pipeline.memory.robot) == ("car1", "car2")
        peer = rclpy.create_node("peer")
        nodes = [car1, car2, peer]
        got: dict[str, list[MatchEventArray]] = {"car1": [], "car2": []}
        for ns in got:
            peer.create_subscription(MatchEventArray, f"/{ns}/memory_node/matches", got[ns].append, 10)
        pub = {ns: peer.create_publisher(Embedding, f"/{ns}/embeddings", 10) for ns in got}
        ex = _spin(nodes)
        assert wait_for(lambda: all(p.get_subscription_count() for p in pub.values()))
        rng = np.random.default_rng(0)
        street, own = rng.normal(size=DIM), rng.normal(size=DIM)
        pub["car1"].publish(_embedding("lidar", street, 1.0))  # car1 scans a street
        pub["car2"].publish(_embedding("lidar", own, 2.0))  # car2 scans another one
        assert wait_for(lambda: len(car1.pipeline.memory) == 1 and len(car2.pipeline.memory) == 1)
        assert car1.pipeline.memory.flush() == 0 and car2.pipeline.memory.flush() == 0
        pub["car2"].publish(_embedding("camera", own, 100.0))  # its own street: not matched (match_robots others)
        time.sleep(0.3)
        pub["car2"].publish(_embedding("camera", street, 101.0))  # car1's street, seen by car2's camera
        assert wait_for(lambda: got["car2"], timeout=10)
        time.sleep(0.3)
        events = [e for arr in got["car2"] for e in arr.events]
        assert len(events) == 1
        ev = events[0]
        assert (ev.query_modality, ev.match_modality, ev.match_robot, ev.match_session) == \
               ("camera", "lidar", "car1", "car1_drive")
        assert ev.score > 0.99 and not got["car1"]
        ex.shutdown()
    finally:
        for n in nodes:
            if isinstance(n, MemoryNode):
                n.pipeline.close()
            n.destroy_node()
        rclpy.try_shutdown()
