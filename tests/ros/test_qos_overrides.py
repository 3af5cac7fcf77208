"""Standard QoS overrides (qos_overrides.<topic>.<publisher|subscription>.<policy>) on every node's topics, on top of
the project's streams.*.reliability / depth parameters."""

from __future__ import annotations

import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.encoder_node import EncoderNode
from cmr_fusion_ros.ros.fusion_node import FusionNode
from cmr_fusion_ros.ros.memory_node import MemoryNode
from tests.ros.test_fusion_node import DIM, PlaceFromData


@pytest.fixture()
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _qos(node, topic: str, kind: str):
    """The profile the node created its subscription / publisher with (what goes to the middleware)."""
    entities = node.subscriptions if kind == "subscription" else node.publishers
    mine = [e.qos_profile for e in entities if e.topic_name == topic]
    assert len(mine) == 1, (topic, kind, [e.topic_name for e in entities])
    if kind == "publisher":  # and what the graph sees
        seen = [i.qos_profile for i in node.get_publishers_info_by_topic(topic) if i.node_name == node.get_name()]
        assert [q.durability for q in seen] == [mine[0].durability]
    return mine[0]


def _fusion_node(tmp_path, extra: list[Parameter]) -> FusionNode:
    base = [Parameter("memory.dim", value=DIM), Parameter("memory.persistence.directory", value=str(tmp_path / "m")),
            Parameter("streams.radar.enabled", value=False)]
    config = FusionConfig.from_dict({"memory": {"dim": DIM, "persistence": {"directory": str(tmp_path / "m")}},
                                     "streams": {"radar": {"enabled": False}}})
    memory = SceneMemory.open(config.memory.persistence.directory, config.memory)
    pipeline = FusionPipeline(config, {Modality.CAMERA: PlaceFromData(), Modality.LIDAR: PlaceFromData()}, memory,
                              poses=PoseBuffer(), session="test")
    return FusionNode(pipeline=pipeline, parameter_overrides=base + extra)


def test_fusion_node_qos_overrides_win_over_the_stream_parameters(ros, tmp_path) -> None:
    node = _fusion_node(tmp_path, [
        Parameter("streams.lidar.reliability", value="reliable"),
        Parameter("streams.camera.reliability", value="reliable"),
        Parameter("streams.camera.depth", value=4),
        Parameter("qos_overrides./lidar/points.subscription.reliability", value="best_effort"),
        Parameter("qos_overrides./lidar/points.subscription.depth", value=2),
        Parameter("qos_overrides./odom.subscription.depth", value=7),
        Parameter("qos_overrides./fusion_node/matches.publisher.durability", value="transient_local"),
        Parameter("qos_overrides./fusion_node/matches.publisher.depth", value=3),
    ])
    try:
        lidar = _qos(node, "/lidar/points", "subscription")
        assert lidar.reliability == ReliabilityPolicy.BEST_EFFORT and lidar.depth == 2  # the override wins
        camera = _qos(node, "/camera/image/compressed", "subscription")
        assert camera.reliability == ReliabilityPolicy.RELIABLE and camera.depth == 4  # the simple parameters
        assert _qos(node, "/odom", "subscription").depth == 7
        matches = _qos(node, "/fusion_node/matches", "publisher")
        assert matches.durability == DurabilityPolicy.TRANSIENT_LOCAL and matches.depth == 3
        assert _qos(node, "/fusion_node/markers", "publisher").durability == DurabilityPolicy.VOLATILE
        # declared as read-only parameters, listed like any other
        names = node.list_parameters(["qos_overrides"], 10).names
        assert "qos_overrides./lidar/points.subscription.reliability" in names
        assert "qos_overrides./diagnostics.publisher.reliability" in names
    finally:
        node.shutdown()
        node.destroy_node()


def test_split_nodes_take_qos_overrides(ros, tmp_path) -> None:
    enc = EncoderNode("lidar_encoder", encoder=PlaceFromData(), parameter_overrides=[
        Parameter("modality", value="lidar"),
        Parameter("qos_overrides./embeddings.publisher.depth", value=5),
        Parameter("qos_overrides./lidar/points.subscription.reliability", value="reliable")])
    mem = MemoryNode("memory_node", parameter_overrides=[
        Parameter("memory.dim", value=DIM), Parameter("memory.persistence.directory", value=str(tmp_path / "m")),
        Parameter("qos_overrides./embeddings.subscription.reliability", value="best_effort")])
    try:
        assert _qos(enc, "/embeddings", "publisher").depth == 5
        assert _qos(enc, "/lidar/points", "subscription").reliability == ReliabilityPolicy.RELIABLE
        assert _qos(mem, "/embeddings", "subscription").reliability == ReliabilityPolicy.BEST_EFFORT
    finally:
        enc.shutdown()
        enc.destroy_node()
        mem.pipeline.close()
        mem.destroy_node()


def test_a_bad_override_stops_the_node_naming_the_parameter(ros, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"qos_overrides\./lidar/points\.subscription\.reliability.*maybe"):
        EncoderNode("lidar_encoder", encoder=PlaceFromData(), parameter_overrides=[
            Parameter("modality", value="lidar"),
            Parameter("qos_overrides./lidar/points.subscription.reliability", value="maybe")])


def test_overrides_from_a_parameter_file_as_the_readme_writes_them(tmp_path) -> None:
    f = tmp_path / "qos.yaml"
    f.write_text("lidar_encoder:\n  ros__parameters:\n    modality: lidar\n    qos_overrides:\n      /lidar/points:\n"
                 "        subscription: {reliability: best_effort, depth: 2}\n      /embeddings:\n"
                 "        publisher: {durability: transient_local}\n")
    rclpy.init(args=["--ros-args", "--params-file", str(f)])
    try:
        enc = EncoderNode("lidar_encoder", encoder=PlaceFromData())
        lidar = _qos(enc, "/lidar/points", "subscription")
        assert lidar.reliability == ReliabilityPolicy.BEST_EFFORT and lidar.depth == 2
        assert _qos(enc, "/embeddings", "publisher").durability == DurabilityPolicy.TRANSIENT_LOCAL
        enc.shutdown()
        enc.destroy_node()
    finally:
        rclpy.try_shutdown()
