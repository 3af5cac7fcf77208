"""The ROS side of replay without DDS traffic: QoS profiles and message classes for recorded types."""

from __future__ import annotations

import pytest

from cmr_fusion_ros.bag.replay import QosSpec

rclpy_qos = pytest.importorskip("rclpy.qos")


def test_qos_profile_maps_every_setting():
    from cmr_fusion_ros.ros.replayer import qos_profile

    p = qos_profile(QosSpec(reliability="best_effort", durability="transient_local", history="keep_last", depth=7,
                            deadline_ns=1_500_000_000, lifespan_ns=0, liveliness="manual_by_topic",
                            avoid_ros_namespace_conventions=True))
    assert p.reliability == rclpy_qos.ReliabilityPolicy.BEST_EFFORT
    assert p.durability == rclpy_qos.DurabilityPolicy.TRANSIENT_LOCAL
    assert p.history == rclpy_qos.HistoryPolicy.KEEP_LAST and p.depth == 7
    assert p.deadline.nanoseconds == 1_500_000_000
    assert p.liveliness == rclpy_qos.LivelinessPolicy.MANUAL_BY_TOPIC and p.avoid_ros_namespace_conventions
    keep_all = qos_profile(QosSpec(history="keep_all", depth=0))
    assert keep_all.history == rclpy_qos.HistoryPolicy.KEEP_ALL
    assert keep_all.reliability == rclpy_qos.ReliabilityPolicy.RELIABLE
    assert keep_all.durability == rclpy_qos.DurabilityPolicy.VOLATILE


def test_message_class_resolution():
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from cmr_fusion_ros.ros.replayer import message_class

    assert message_class("std_msgs/msg/String") is String
    assert message_class("sensor_msgs/PointCloud2") is PointCloud2  # ROS 1 style name
    assert message_class("nosuch_pkg/msg/Thing") is None
    assert message_class("std_msgs/msg/NoSuchType") is None
    assert message_class("garbage") is None
