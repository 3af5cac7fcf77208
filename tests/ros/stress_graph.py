"""Shared pieces of the reliability node tests: an in-process fusion_node with stand-in encoders, a peer node,
conversion of the fuzz messages (``tests/unit/stress_messages.py``) into rclpy messages, and waiting helpers."""

from __future__ import annotations

import array
import threading
import time
from contextlib import contextmanager

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField

from cmr_fusion_msgs.msg import MatchEventArray
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import make_header
from cmr_fusion_ros.ros.fusion_node import FusionNode
from cmr_fusion_ros.ros.params import declare_fusion_parameters

from tests.unit import stress_messages as sm

S = 1_000_000_000
DIM = 32
TOPICS = {Modality.CAMERA: "/camera/image/raw", Modality.LIDAR: "/lidar/points", Modality.RADAR: "/radar/points"}


class PlaceEncoder:
    """Stand-in encoder: the embedding of the place a frame carries (see stress_messages); optionally slow."""

    dim = DIM

    def __init__(self, delay_s: float = 0.0, on_encode=None) -> None:
        self.delay_s = delay_s
        self.on_encode = on_encode
        self.calls = 0

    def encode(self, items):
        out = []
        for data in items:
            self.calls += 1
            if self.on_encode is not None:
                self.on_encode(data)
            if self.delay_s:
                time.sleep(self.delay_s)
            v = np.random.default_rng(sm.expected_place(data)).normal(size=DIM)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


def base_overrides(tmp_path, **extra) -> list[Parameter]:
    values = {
        "memory.dim": DIM,
        "memory.persistence.directory": str(tmp_path / "memory"),
        "memory.admission.enabled": False,
        "policy.exclude_recent_s": 20.0,
        "policy.min_score": 0.9,
        "odometry.topic": "",
        "streams.camera.transport": "raw",
        "streams.camera.topic": TOPICS[Modality.CAMERA],
        "output.diagnostics_period_s": 0.1,
    }
    for m in Modality:
        values[f"streams.{m.value}.reliability"] = "reliable"
    values.update(extra)
    return [Parameter(k, value=v) for k, v in values.items()]


@contextmanager
def node_graph(overrides: list[Parameter], encoders: dict[Modality, PlaceEncoder] | None = None, poses=False):
    """Yield (node, peer, got) with got = {"matches", "diag", "logs"} lists filled by the peer's subscriptions."""
    rclpy.init()
    try:
        probe = rclpy.create_node("probe_config", parameter_overrides=overrides)
        config = declare_fusion_parameters(probe)
        probe.destroy_node()
        memory = SceneMemory.open(config.memory.persistence.directory, config.memory)
        encoders = encoders or {m: PlaceEncoder() for m in config.enabled_modalities}
        pipeline = FusionPipeline(config, encoders, memory, poses=PoseBuffer() if poses else None, session="test")
        node = FusionNode(pipeline=pipeline, parameter_overrides=overrides)
        peer = rclpy.create_node("peer")
        got = {"matches": [], "diag": [], "logs": []}
        peer.create_subscription(MatchEventArray, "/fusion_node/matches", got["matches"].append, 1000)
        peer.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 100)
        peer.create_subscription(Log, "/rosout", lambda m: got["logs"].append(m) if m.name == "fusion_node" else None,
                                 1000)
        ex = MultiThreadedExecutor(num_threads=2)
        ex.add_node(node)
        ex.add_node(peer)
        spinner = threading.Thread(target=ex.spin, daemon=True)
        spinner.start()
        try:
            # events published before the peer's subscription is matched would be lost
            assert wait_for(lambda: node.pub_matches.get_subscription_count() > 0, 10.0)
            yield node, peer, got
        finally:
            ex.shutdown()
            node.shutdown()
            node.destroy_node()
            peer.destroy_node()
    finally:
        rclpy.try_shutdown()


def wait_for(cond, timeout=20.0, step=0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def stream_status(got, modality: Modality) -> dict[str, str] | None:
    for d in reversed(got["diag"]):
        for st in d.status:
            if st.name.endswith(f"stream {modality.value}"):
                return {kv.key: kv.value for kv in st.values}
    return None


def memory_status(got) -> dict[str, str] | None:
    for d in reversed(got["diag"]):
        for st in d.status:
            if st.name.endswith(": memory"):
                return {kv.key: kv.value for kv in st.values}
    return None


def _bytes(data: bytes) -> array.array:
    out = array.array("B")
    out.frombytes(data)
    return out


def to_ros(msg, stamp_ns: int, frame_id: str = "sensor"):
    """An rclpy message with the fields of a stress_messages object."""
    header = make_header(stamp_ns, frame_id)
    if isinstance(msg, sm.ImageMsg):
        out = Image(header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                    is_bigendian=int(msg.is_bigendian), step=msg.step)
    elif isinstance(msg, sm.CompressedMsg):
        out = CompressedImage(header=header, format=msg.format)
    else:
        out = PointCloud2(header=header, height=msg.height, width=msg.width, is_bigendian=bool(msg.is_bigendian),
                          point_step=msg.point_step, row_step=msg.row_step, is_dense=bool(msg.is_dense),
                          fields=[PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                                  for f in msg.fields])
    out.data = _bytes(bytes(msg.data))
    return out


def publishers(peer, modalities, depth=1000):
    from cmr_fusion_ros.ros.fusion_node import qos_for

    pubs = {}
    for m in modalities:
        pubs[m] = peer.create_publisher(Image if m is Modality.CAMERA else PointCloud2, TOPICS[m],
                                        qos_for("reliable", depth))
    assert wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), 10.0)
    return pubs
