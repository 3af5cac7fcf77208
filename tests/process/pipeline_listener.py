"""A separate subscriber process: prints READY, then each received match event as one JSON line; exits 0 on SIGINT."""

from __future__ import annotations

import json
import signal
import sys

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from cmr_fusion_msgs.msg import MatchEventArray
from cmr_fusion_ros.ros.conversions import stamp_to_ns


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("pipeline_listener")
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def on_matches(msg: MatchEventArray) -> None:
        for e in msg.events:
            print(json.dumps({"stamp_ns": stamp_to_ns(e.header.stamp), "query_modality": e.query_modality,
                              "match_modality": e.match_modality, "match_stamp_ns": stamp_to_ns(e.match_stamp),
                              "match_id": e.match_id, "query_id": e.query_id, "score": float(e.score),
                              "rank": e.rank, "frame_id": e.header.frame_id, "pose_frame_id": e.pose_frame_id,
                              "match_session": e.match_session}), flush=True)

    node.create_subscription(MatchEventArray, "/fusion_node/matches", on_matches,
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    print("READY", flush=True)
    while not stop:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
