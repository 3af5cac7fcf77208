"""A late subscriber for the latched-topic replay test: ``replay_late_subscriber.py TOPIC``.

Subscribes to TOPIC (std_msgs/String) with transient_local durability, waits at most 30 s for one message, prints
its data and exits 0 (exit 3 when nothing came).
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String


def main(topic: str, timeout: float = 30.0) -> int:
    rclpy.init()
    node = rclpy.create_node("cmr_test_late_subscriber")
    got: list[str] = []
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(String, topic, lambda m: got.append(m.data), qos)
        deadline = time.monotonic() + timeout
        while not got and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        print(got[0] if got else "NOTHING", flush=True)
        return 0 if got else 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
