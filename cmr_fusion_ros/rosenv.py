"""Environment defaults for the project's own commands that start ROS (launch, demo, replay, bench, stress) and the
tests; never applied by the nodes themselves (no rclpy import here).

* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless the user set it: discovery stays on this machine.
* ``FASTDDS_DEFAULT_PROFILES_FILE`` = the shipped profile with a 32 MiB shared-memory segment, unless set.
* ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp`` unless set (the profile is a Fast DDS one).

They must be in the environment before ``rclpy.init()``; child processes inherit them.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from cmr_fusion_ros.paths import config_file

__all__ = ["ros_defaults", "apply_ros_defaults", "FASTDDS_PROFILE"]

FASTDDS_PROFILE = "fastdds_profile.xml"


def ros_defaults() -> dict[str, str]:
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(config_file(FASTDDS_PROFILE)),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


def apply_ros_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Fill in the defaults that are not set yet (in ``os.environ`` when ``env`` is None); return the mapping."""
    target = os.environ if env is None else env
    for key, value in ros_defaults().items():
        if not target.get(key):
            target[key] = value
    return target
