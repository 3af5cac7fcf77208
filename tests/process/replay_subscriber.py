"""Subscriber process for the replay process test.

``replay_subscriber.py STRING_TOPIC N_STRINGS CLOUD_TOPIC N_CLOUDS``: subscribes to the two topics and ``/clock``,
prints READY once its subscriptions exist, then waits (at most 60 s) for every expected message and prints one JSON
line: the strings in arrival order, the clouds' stamps and byte checksums, and the /clock stamps received.
Exit 0 when everything arrived, 3 on timeout (the JSON is printed either way).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String


def main(string_topic: str, n_strings: int, cloud_topic: str, n_clouds: int, timeout: float = 60.0) -> int:
    rclpy.init()
    node = rclpy.create_node("cmr_test_replay_subscriber")
    strings: list[str] = []
    clouds: list[list] = []
    clock: list[int] = []
    try:
        node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec * 10**9 + m.clock.nanosec),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        node.create_subscription(String, string_topic, lambda m: strings.append(m.data), QoSProfile(depth=100))
        node.create_subscription(
            PointCloud2, cloud_topic,
            lambda m: clouds.append([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.width,
                                     hashlib.sha256(bytes(m.data)).hexdigest()]),
            QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        print("READY", flush=True)
        deadline = time.monotonic() + timeout
        while (len(strings) < n_strings or len(clouds) < n_clouds) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        end = time.monotonic() + 0.2  # a few more /clock ticks, if any
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        print(json.dumps({"strings": strings, "clouds": clouds, "clock": clock}), flush=True)
        return 0 if len(strings) >= n_strings and len(clouds) >= n_clouds else 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
