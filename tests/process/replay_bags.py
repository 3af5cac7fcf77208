"""Small rosbag2 bags for the replay tests, written with ``rosbags`` (no ROS needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
STRING = "std_msgs/msg/String"
CLOUD = "sensor_msgs/msg/PointCloud2"


def qos(reliability: str = "RELIABLE", durability: str = "VOLATILE", depth: int = 10) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability[reliability], QosDurability[durability], zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def string_cdr(text: str) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(TYPESTORE.types[STRING](data=text), STRING))


def cloud_cdr(points: int, stamp_ns: int, seed: int = 0) -> bytes:
    """A PointCloud2 with x, y, z, intensity float32 fields (16 bytes per point)."""
    types = TYPESTORE.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="lidar")
    fields = [types["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate("x y z intensity".split())]
    data = np.random.default_rng(seed).random((points, 4), dtype=np.float32).view(np.uint8).reshape(-1)
    msg = types[CLOUD](header=header, height=1, width=points, fields=fields, is_bigendian=False, point_step=16,
                       row_step=16 * points, data=data, is_dense=True)
    return bytes(TYPESTORE.serialize_cdr(msg, CLOUD))


def write_bag(path: Path, messages: Sequence[tuple[str, str, int, bytes]], *, storage: str = "sqlite3",
              qos_by_topic: dict[str, Qos] | None = None, typestore=TYPESTORE) -> Path:
    """``messages``: (topic, msgtype, receive time ns, CDR bytes), any order. Returns the bag folder."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, _, _ in messages:
            if topic not in conns:
                offers = [qos_by_topic[topic]] if qos_by_topic and topic in qos_by_topic else []
                conns[topic] = writer.add_connection(topic, msgtype, typestore=typestore,
                                                     offered_qos_profiles=offers)
        for topic, _, stamp, data in sorted(messages, key=lambda m: m[2]):
            writer.write(conns[topic], stamp, data)
    return path


def chatter_bag(path: Path, n: int = 20, start_ns: int = 1_700_000_000_000_000_000, period_ns: int = 50_000_000,
                topic: str = "/chatter", storage: str = "sqlite3") -> Path:
    """``n`` std_msgs/String messages 'msg <i>' every ``period_ns``."""
    msgs = [(topic, STRING, start_ns + i * period_ns, string_cdr(f"msg {i}")) for i in range(n)]
    return write_bag(path, msgs, storage=storage)
