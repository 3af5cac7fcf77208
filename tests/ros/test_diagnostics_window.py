"""Diagnostics levels come from a recent window: a transient problem turns a status WARN / ERROR, and it is OK again
once the problem stops; the totals since start stay in the values. Names in diagnostic_updater's form."""

from __future__ import annotations

import threading
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2

from cmr_fusion_ros.ros.conversions import array_to_pointcloud2, make_header
from cmr_fusion_ros.ros.messages import diagnostics_message
from cmr_fusion_ros.ros.stream_io import RecentProblems, StreamStats
from tests.ros.test_fusion_node import cloud_at, wait_for
from tests.ros.test_qos_overrides import _fusion_node


def _levels(arr: DiagnosticArray) -> dict[str, int]:
    return {st.name: int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
            for st in arr.status}


def test_stream_level_follows_the_window_and_totals_stay() -> None:
    stats = StreamStats(window_s=10.0)
    problems = RecentProblems(window_s=10.0)
    t0 = stats._marks[0][0]
    stats.received, stats.dropped, stats.bad_messages = 5, 1, 1  # one drop and one bad message just after start
    problems.add("worker error: boom", now=t0 + 0.5)
    arrays = {}
    for t in range(1, 15):  # diagnostics every second
        now = t0 + t
        arrays[t] = diagnostics_message("/ns/fusion_node", 0, {"lidar": stats.summary(now)}, {"entries": 0},
                                        problems.recent(now))
    early, late = _levels(arrays[3]), _levels(arrays[14])
    assert early == {"fusion_node: stream lidar": 1, "fusion_node: memory": 2}  # WARN, ERROR
    assert late == {"fusion_node: stream lidar": 0, "fusion_node: memory": 0}  # OK again after 10 s without
    lidar = {kv.key: kv.value for kv in arrays[14].status[0].values}
    assert lidar["dropped"] == "1" and lidar["bad_messages"] == "1" and lidar["dropped_recent"] == "0"
    assert arrays[3].status[0].message == "1 dropped, 1 bad messages in the last 10 s"
    assert {st.hardware_id for st in arrays[14].status} == {"/ns/fusion_node"}
    # a new drop makes it WARN again
    stats.dropped += 1
    assert _levels(diagnostics_message("/ns/fusion_node", 0, {"lidar": stats.summary(t0 + 15)}, {}))[
        "fusion_node: stream lidar"] == 1


@pytest.fixture()
def node_and_diagnostics(tmp_path):
    rclpy.init()
    node = _fusion_node(tmp_path, [Parameter("output.diagnostics_period_s", value=0.1),
                                   Parameter("output.diagnostics_window_s", value=1.0),
                                   Parameter("streams.lidar.reliability", value="reliable")])
    peer = rclpy.create_node("peer")
    got: list[DiagnosticArray] = []
    peer.create_subscription(DiagnosticArray, "/diagnostics", got.append, 50)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(peer)
    threading.Thread(target=ex.spin, daemon=True).start()
    yield node, peer, got
    ex.shutdown()
    node.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.try_shutdown()


def test_fusion_node_transient_problems_clear(node_and_diagnostics) -> None:
    node, peer, got = node_and_diagnostics
    lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
    assert wait_for(lambda: lidar.get_subscription_count())

    def newest(name: str):
        for arr in reversed(got):
            for st in arr.status:
                if st.name == name:
                    return _levels(arr)[name], {kv.key: kv.value for kv in st.values}, st
        return None

    assert wait_for(lambda: newest("fusion_node: stream lidar") is not None)
    msg = array_to_pointcloud2(cloud_at(1), make_header(1_000_000_000, "lidar"))
    msg.point_step = 3  # malformed: one bad message
    lidar.publish(msg)
    node._problem("worker error: a transient failure")  # what the worker records when something raises
    assert wait_for(lambda: (newest("fusion_node: stream lidar") or (0,))[0] == 1, timeout=5.0)  # WARN
    assert wait_for(lambda: (newest("fusion_node: memory") or (0,))[0] == 2, timeout=5.0)  # ERROR
    assert "a transient failure" in newest("fusion_node: memory")[2].message
    got.clear()
    time.sleep(1.5)  # longer than the window: no new problem
    assert wait_for(lambda: (newest("fusion_node: stream lidar") or (1,))[0] == 0, timeout=5.0)  # OK again
    assert wait_for(lambda: (newest("fusion_node: memory") or (2,))[0] == 0, timeout=5.0)
    level, values, st = newest("fusion_node: stream lidar")
    assert values["bad_messages"] == "1" and values["bad_messages_recent"] == "0" and st.hardware_id == "/fusion_node"
    assert newest("fusion_node: memory")[1]["errors"] == "1"
