"""A peer process for the cross-process MatchEventArray test: `publisher` or `subscriber` role.

subscriber: prints READY, then the first MatchEventArray it receives as JSON, and exits 0 (exit 3 on timeout).
publisher: waits for a subscriber (with a timeout), publishes every 0.1 s until the subscriber has gone.
"""

from __future__ import annotations

import json
import math
import sys
import time

import rclpy
from geometry_msgs.msg import Point, Pose, Quaternion
from rclpy.qos import QoSProfile, ReliabilityPolicy

from cmr_fusion_msgs.msg import MatchEvent, MatchEventArray
from cmr_fusion_ros.ros.conversions import make_header, ns_to_stamp, stamp_to_ns

TOPIC = "/cmr_test/matches"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def sample() -> MatchEventArray:
    events = []
    for rank, score in enumerate((0.93, 0.71)):
        e = MatchEvent(header=make_header(1_700_000_000_123_456_789, "camera_optical_frame"))
        e.query_modality, e.query_topic, e.query_id = "camera", "/camera/image/compressed", 42
        e.match_modality, e.match_topic = "lidar", "/lidar/points"
        e.match_stamp, e.match_frame_id, e.match_id = ns_to_stamp(1_699_999_820_000_000_000), "lidar", 7 + rank
        e.score, e.rank = score, rank
        e.query_pose_valid = True
        e.query_pose = Pose(position=Point(x=10.0, y=2.0, z=0.0), orientation=Quaternion(w=1.0))
        e.match_pose_valid = rank == 0
        e.match_pose = Pose(position=Point(x=13.0, y=6.0, z=0.0), orientation=Quaternion(w=1.0))
        e.distance = 5.0 if rank == 0 else math.nan
        events.append(e)
    return MatchEventArray(header=make_header(1_700_000_000_123_456_789, "camera_optical_frame"), events=events)


def as_dict(msg: MatchEventArray) -> dict:
    return {
        "stamp": stamp_to_ns(msg.header.stamp),
        "frame_id": msg.header.frame_id,
        "events": [
            {
                "query": [e.query_modality, e.query_topic, e.query_id],
                "match": [e.match_modality, e.match_topic, stamp_to_ns(e.match_stamp), e.match_frame_id, e.match_id],
                "score": round(float(e.score), 5),
                "rank": e.rank,
                "poses": [e.query_pose_valid, e.query_pose.position.x, e.match_pose_valid, e.match_pose.position.y],
                "distance": None if math.isnan(e.distance) else e.distance,
            }
            for e in msg.events
        ],
    }


def main(role: str, timeout: float = 30.0) -> int:
    rclpy.init()
    node = rclpy.create_node(f"cmr_test_{role}")
    try:
        deadline = time.monotonic() + timeout
        if role == "subscriber":
            got: list[MatchEventArray] = []
            node.create_subscription(MatchEventArray, TOPIC, got.append, QOS)
            print("READY", flush=True)
            while not got and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            if not got:
                return 3
            print(json.dumps(as_dict(got[0])), flush=True)
            return 0
        pub = node.create_publisher(MatchEventArray, TOPIC, QOS)
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.05)
        while pub.get_subscription_count() > 0 and time.monotonic() < deadline:
            pub.publish(sample())
            time.sleep(0.1)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
