"""Pose lookup by time: interpolation, gaps, extrapolation limits, out-of-order input."""

from __future__ import annotations

import math

import pytest

from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Pose

S = 1_000_000_000


def yaw(a):
    return Pose(qz=math.sin(a / 2), qw=math.cos(a / 2))


def test_interpolates_position_and_orientation():
    buf = PoseBuffer()
    buf.add(0, Pose(x=0, y=0, qz=yaw(0).qz, qw=yaw(0).qw))
    buf.add(S // 2, Pose(x=10, y=4, qz=yaw(0.2).qz, qw=yaw(0.2).qw))
    p = buf.lookup(S // 4)
    assert (p.x, p.y) == pytest.approx((5, 2))
    assert 2 * math.atan2(p.qz, p.qw) == pytest.approx(0.1, abs=1e-3)
    assert buf.lookup(0).x == 0 and buf.lookup(S // 2).x == 10


def test_gap_and_extrapolation_give_no_pose():
    buf = PoseBuffer(max_gap_ns=S, max_extrapolation_ns=S // 10)
    buf.add(0, Pose(x=0))
    buf.add(3 * S, Pose(x=3))
    assert buf.lookup(S) is None  # samples 3 s apart: no pose invented
    assert buf.lookup(3 * S + S // 20).x == 3
    assert buf.lookup(3 * S + S // 5) is None
    assert buf.lookup(-S // 5) is None
    assert PoseBuffer().lookup(0) is None


def test_out_of_order_and_duplicate_stamps():
    buf = PoseBuffer()
    buf.add(2 * S, Pose(x=2))
    buf.add(0, Pose(x=0))
    buf.add(S, Pose(x=1))
    buf.add(S, Pose(x=1.5))
    assert len(buf) == 3
    assert buf.lookup(S).x == 1.5
    assert buf.lookup(S // 2).x == pytest.approx(0.75)


def test_capacity_keeps_newest():
    buf = PoseBuffer(capacity=3)
    for i in range(5):
        buf.add(i * S, Pose(x=i))
    assert len(buf) == 3 and buf.lookup(4 * S).x == 4 and buf.lookup(0) is None


def test_pose_yaw_from_quaternion() -> None:
    for yaw in (0.0, 0.7, -2.5, math.pi / 2):
        p = Pose(qz=math.sin(yaw / 2), qw=math.cos(yaw / 2))
        assert abs(p.yaw - yaw) < 1e-12
    assert Pose().yaw == 0.0
