"""Nodes leave the middleware environment to the user (ros2 run / ros2 launch); the project's launcher sets defaults."""

from __future__ import annotations

import os

import pytest

from cmr_fusion_ros.launcher import child_environment
from cmr_fusion_ros.ros import node_main
from cmr_fusion_ros.rosenv import ros_defaults

KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "FASTDDS_DEFAULT_PROFILES_FILE")


class _Stop(Exception):
    pass


def test_run_node_sets_nothing_in_the_dds_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")  # a robot's choice: other computers see the node
    seen: dict[str, str | None] = {}

    def init(args=None):  # what rclpy.init (and so the middleware) would read; stop before any DDS starts
        seen.update({k: os.environ.get(k) for k in KEYS})
        raise _Stop

    monkeypatch.setattr(node_main.rclpy, "init", init)
    with pytest.raises(_Stop):
        node_main.run_node("fusion_node", lambda: None)
    assert seen == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "RMW_IMPLEMENTATION": None,
                    "FASTDDS_DEFAULT_PROFILES_FILE": None}
    assert {k: os.environ.get(k) for k in KEYS} == seen


def test_project_launcher_still_sets_localhost_and_the_profile() -> None:
    env = child_environment({"PATH": "/bin"})
    assert {k: env[k] for k in KEYS} == ros_defaults()
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_profile.xml")
