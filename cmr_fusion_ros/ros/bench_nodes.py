"""The ROS 2 side of ``cmr-fusion bench pipeline``: the sensor publisher and relay processes, and the bench's subscriber.

The orchestration, the generated content, the CDR stamps, the statistics and the report are in
:mod:`cmr_fusion_ros.eval.bench_pipeline` (no ROS); this module serialises the generated content into sensor
messages, publishes and relays them, and receives what the bench measures:

* ``python -m cmr_fusion_ros.ros.bench_nodes publish ...`` (:func:`publisher_main`): generated sensor messages at
  fixed rates, the wall clock written into each message's stamp just before it is published.
* ``python -m cmr_fusion_ros.ros.bench_nodes relay ...`` (:func:`relay_main`): a plain rclpy relay, every sensor
  topic's raw CDR republished on ``/bench_relay/<topic>`` (the DDS floor).
* :class:`BenchSubscriber`, in the bench's own process: relayed sensor bytes (floor), match events and
  ``/diagnostics`` (pipeline).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from cmr_fusion_ros.eval.bench_pipeline import (
    RELAY_PREFIX, generate_content, latency_stats, read_stamp, stream_topic, write_stamp)
from cmr_fusion_ros.ros.conversions import array_to_pointcloud2, make_header, numpy_to_compressed, numpy_to_image

__all__ = ["BenchSubscriber", "generate_messages", "main", "publisher_main", "relay_main"]


def generate_messages(stream: str, *, variants: int = 4, seed: int = 0, width: int = 1280, height: int = 720,
                      lidar_rings: int = 64, lidar_columns: int = 1600, radar_points: int = 256,
                      camera_transport: str = "compressed") -> tuple[str, list[bytes]]:
    """``variants`` serialised messages of ``stream`` (ROS type name, CDR bytes each) made of
    :func:`~cmr_fusion_ros.eval.bench_pipeline.generate_content`; the stamps are set later."""
    content = generate_content(stream, variants=variants, seed=seed, width=width, height=height,
                               lidar_rings=lidar_rings, lidar_columns=lidar_columns, radar_points=radar_points)
    out = []
    for data in content:
        if stream == "camera":
            header = make_header(0, "camera_optical_frame")
            if camera_transport == "compressed":
                msg, kind = numpy_to_compressed(data, "rgb8", header), "sensor_msgs/msg/CompressedImage"
            else:
                msg, kind = numpy_to_image(data, "rgb8", header), "sensor_msgs/msg/Image"
        else:  # lidar | radar: generate_content refused any other name
            msg, kind = array_to_pointcloud2(data, make_header(0, stream)), "sensor_msgs/msg/PointCloud2"
        out.append(bytes(serialize_message(msg)))
    return kind, out


def _msg_class(kind: str):
    return {"sensor_msgs/msg/CompressedImage": CompressedImage, "sensor_msgs/msg/Image": Image,
            "sensor_msgs/msg/PointCloud2": PointCloud2}[kind]


def _qos(depth: int = 5, reliable: bool = False) -> QoSProfile:
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


# --- the publisher process ------------------------------------------------------------------------------------------

def publisher_main(argv: Sequence[str]) -> int:
    """Publish generated messages at fixed rates for ``--duration`` s once every topic has a subscriber; prints
    ``START <wall ns>``, then one JSON line with the counts."""
    ap = argparse.ArgumentParser(prog="bench_pipeline publish")
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--camera-transport", default="compressed")
    ap.add_argument("--rates", default="camera=30,lidar=10,radar=20")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--lidar-columns", type=int, default=1600)
    ap.add_argument("--lidar-rings", type=int, default=64)
    ap.add_argument("--radar-points", type=int, default=256)
    ap.add_argument("--wait-timeout", type=float, default=120.0)
    a = ap.parse_args(argv)

    rates = {k: float(v) for k, v in (kv.split("=") for kv in a.rates.split(",") if kv)}
    rclpy.init()
    node = rclpy.create_node("bench_sensor_publisher")
    streams = []
    for i, (name, rate) in enumerate(rates.items()):
        kind, bufs = generate_messages(name, seed=i, width=a.width, height=a.height, lidar_rings=a.lidar_rings,
                                       lidar_columns=a.lidar_columns, radar_points=a.radar_points,
                                       camera_transport=a.camera_transport)
        pub = node.create_publisher(_msg_class(kind), stream_topic(name, a.camera_transport), _qos(5))
        streams.append((name, rate, pub, [bytearray(b) for b in bufs]))
    deadline = time.monotonic() + a.wait_timeout
    while any(pub.get_subscription_count() < 1 for _, _, pub, _ in streams):
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no subscriber on " + ", ".join(
                pub.topic_name for _, _, pub, _ in streams if pub.get_subscription_count() < 1)}), flush=True)
            return 3
        time.sleep(0.05)
    time.sleep(0.5)  # let the last discovery settle
    counts = {name: 0 for name, *_ in streams}
    late = {name: 0 for name, *_ in streams}
    publish_ms: dict[str, list[float]] = {name: [] for name, *_ in streams}
    start = time.monotonic() + 0.2
    end = start + a.duration
    print(f"START {time.time_ns() + 200_000_000}", flush=True)

    def loop(name: str, rate: float, pub, bufs: list[bytearray]) -> None:
        period = 1.0 / rate
        k = 0
        next_t = start
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if next_t > now:
                time.sleep(next_t - now)
            elif now - next_t > period:  # fell behind by more than a period: skip, do not burst
                late[name] += 1
                next_t += period * int((now - next_t) / period)
            buf = bufs[k % len(bufs)]
            t0 = time.perf_counter()
            write_stamp(buf, time.time_ns())
            pub.publish(bytes(buf))
            publish_ms[name].append((time.perf_counter() - t0) * 1e3)
            counts[name] += 1
            k += 1
            next_t += period

    threads = [threading.Thread(target=loop, args=s, daemon=True) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"published": counts, "late": late, "publish_ms": {k: latency_stats(v) for k, v in publish_ms.items()},
                      "start_wall_ns": None}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# --- the relay process ----------------------------------------------------------------------------------------------

def relay_main(argv: Sequence[str]) -> int:
    """Plain rclpy relay: every sensor topic's raw CDR republished on ``/bench_relay/<topic>``; prints READY."""
    ap = argparse.ArgumentParser(prog="bench_pipeline relay")
    ap.add_argument("--camera-transport", default="compressed")
    ap.add_argument("--streams", default="camera,lidar,radar")
    a = ap.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("bench_relay")
    kinds = {"camera": "sensor_msgs/msg/CompressedImage" if a.camera_transport == "compressed" else "sensor_msgs/msg/Image",
             "lidar": "sensor_msgs/msg/PointCloud2", "radar": "sensor_msgs/msg/PointCloud2"}
    keep = []
    for name in a.streams.split(","):
        cls = _msg_class(kinds[name])
        topic = stream_topic(name, a.camera_transport)
        pub = node.create_publisher(cls, RELAY_PREFIX + topic, _qos(5))
        keep.append(node.create_subscription(cls, topic, lambda data, pub=pub: pub.publish(data), _qos(5), raw=True))
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# --- the bench's subscriber -----------------------------------------------------------------------------------------

class BenchSubscriber:
    """The bench process's subscriptions: relayed sensor bytes (floor) and match events + diagnostics (pipeline).

    Its node ``bench_subscriber`` lives in an rclpy context of its own (usable beside an rclpy already initialised in
    this process) and is spun by a background thread from construction until :meth:`close`. Read ``floor``,
    ``e2e`` and ``diagnostics`` under ``lock``.
    """

    def __init__(self, streams: Sequence[str], camera_transport: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from cmr_fusion_msgs.msg import MatchEventArray

        self.lock = threading.Lock()
        self.floor: dict[str, list[tuple[int, int]]] = {s: [] for s in streams}  # (stamp, receive) ns
        self.e2e: dict[str, dict[int, int]] = {s: {} for s in streams}  # stamp -> first receive ns
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.context = rclpy.Context()
        self.context.init()
        self.node = node = rclpy.create_node("bench_subscriber", context=self.context)
        self.subs = []
        for s in streams:
            kind = "sensor_msgs/msg/PointCloud2" if s != "camera" else (
                "sensor_msgs/msg/CompressedImage" if camera_transport == "compressed" else "sensor_msgs/msg/Image")
            self.subs.append(node.create_subscription(_msg_class(kind), RELAY_PREFIX + stream_topic(s, camera_transport),
                                                      self._relay_cb(s), _qos(5), raw=True))
        self.subs.append(node.create_subscription(MatchEventArray, "/fusion_node/matches", self._on_matches,
                                                  _qos(100, reliable=True)))
        self.subs.append(node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def count_publishers(self, topic: str) -> int:
        """Publishers of ``topic`` seen by this node (discovery)."""
        return self.node.count_publishers(topic)

    def close(self) -> None:
        """Stop spinning, destroy the node, shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def _relay_cb(self, stream: str):
        out = self.floor[stream]

        def cb(data: bytes) -> None:
            t = time.time_ns()
            out.append((read_stamp(data), t))

        return cb

    def _on_matches(self, msg) -> None:
        t = time.time_ns()
        with self.lock:
            for e in msg.events:
                stamp = e.header.stamp.sec * 1_000_000_000 + e.header.stamp.nanosec
                self.e2e.setdefault(e.query_modality, {}).setdefault(stamp, t)

    def _on_diag(self, msg) -> None:
        with self.lock:
            for st in msg.status:
                if st.hardware_id == "/fusion_node":
                    self.diagnostics[st.name.split(": ", 1)[-1]] = {kv.key: kv.value for kv in st.values}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "publish":
        return publisher_main(argv[1:])
    if argv and argv[0] == "relay":
        return relay_main(argv[1:])
    print("usage: python -m cmr_fusion_ros.ros.bench_nodes publish|relay ...  (the bench: cmr-fusion bench "
          "pipeline)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
