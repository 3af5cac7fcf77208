"""Test-wide settings: DDS discovery stays on this machine, and each test run gets its own ROS domain.

Set before anything imports rclpy, and inherited by every process a test starts.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
if not os.environ.get("CMR_TEST_DOMAIN_ID"):
    # 1..100: valid Fast DDS domain ids whose ports do not collide with the default domain 0.
    os.environ["CMR_TEST_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["CMR_TEST_DOMAIN_ID"]

REPO = Path(__file__).resolve().parent.parent
from cmr_fusion_ros.rosenv import apply_ros_defaults  # noqa: E402  (after the environment is set)

apply_ros_defaults()

REAL = REPO / "tests" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    return REAL


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
