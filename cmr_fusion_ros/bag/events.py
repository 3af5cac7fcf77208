"""Match events as rosbag2 messages with ``rosbags`` (no rclpy): the ``cmr_fusion_msgs`` types registered from their
``.msg`` definitions, so the bags carry the full message definition and open in any ROS 2 tool. The bag can also hold
the match markers (as the live node publishes them) and topics copied from the input bags (odometry, tf), so that a
viewer such as Foxglove shows the trajectory and the match links in 3D."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cmr_fusion_ros.bag.writer import MARKER_ARRAY, copy_topics, marker_array_msg
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.match_markers import match_markers
from cmr_fusion_ros.core.pipeline import PipelineOutput
from cmr_fusion_ros.core.policy import MatchResult
from cmr_fusion_ros.core.types import Pose
from cmr_fusion_ros.paths import source_root

__all__ = ["MATCHES_TYPE", "EventBagWriter", "msg_definitions_dir", "typestore_with_events"]

MATCHES_TYPE = "cmr_fusion_msgs/msg/MatchEventArray"
_MSGS = ("MatchEvent", "MatchEventArray", "Embedding")


def msg_definitions_dir() -> Path:
    """Where the ``cmr_fusion_msgs`` ``.msg`` files are: installed share folder, else the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("cmr_fusion_msgs")) / "msg")
    except Exception:  # not installed, or AMENT_PREFIX_PATH unset: try the other places
        pass
    candidates += [Path(sys.prefix) / "share" / "cmr_fusion_msgs" / "msg", source_root() / "cmr_fusion_msgs" / "msg"]
    for c in candidates:
        if (c / "MatchEvent.msg").is_file():
            return c
    raise BagError(str(candidates[-1]), "cmr_fusion_msgs message definitions (MatchEvent.msg) not found")


def typestore_with_events():
    """A rosbags typestore (ROS 2 Kilted, else the newest known) with the cmr_fusion_msgs types registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST)
    folder = msg_definitions_dir()
    types: dict[str, Any] = {}
    for name in _MSGS:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"cmr_fusion_msgs/msg/{name}"))
    store.register(types)
    return store


def _time(store, ns: int):
    Time = store.types["builtin_interfaces/msg/Time"]
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _pose(store, p: Pose | None):
    T = store.types
    p = p or Pose()
    return T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=p.x, y=p.y, z=p.z),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=p.qx, y=p.qy, z=p.qz, w=p.qw))


def _event(store, r: MatchResult):
    T = store.types
    header = T["std_msgs/msg/Header"](stamp=_time(store, r.query_stamp_ns), frame_id=r.query_frame_id)
    return T["cmr_fusion_msgs/msg/MatchEvent"](
        header=header, query_modality=r.query_modality.value, query_topic=r.query_topic, query_id=int(r.query_id),
        match_modality=r.match_modality.value, match_topic=r.match_topic, match_stamp=_time(store, r.match_stamp_ns),
        match_frame_id=r.match_frame_id, match_id=int(r.match_id), match_robot=r.match_robot,
        match_session=r.match_session, score=float(r.score), probability=float(r.probability),
        rank=int(r.rank),
        query_pose_valid=r.query_pose is not None, query_pose=_pose(store, r.query_pose),
        match_pose_valid=r.match_pose is not None, match_pose=_pose(store, r.match_pose),
        distance=float(r.distance) if not math.isnan(r.distance) else math.nan,
        pose_frame_id=r.pose_frame_id,
    )


class EventBagWriter:
    """Writes one ``MatchEventArray`` per pipeline output with events, on ``topic``, to a new rosbag2 directory; with
    ``markers_topic`` also the ``MarkerArray`` the node would publish (in ``marker_frame``, matches of robots other
    than ``own_robot`` in the fleet colour); :meth:`copy_from` adds
    topics of the input bags as they are."""

    def __init__(self, path: str | Path, topic: str = "/fusion_node/matches", storage: str = "mcap", *,
                 markers_topic: str | None = None, marker_frame: str = "odom", own_robot: str = "") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise BagError(str(self.path), "output bag exists; choose a new path")
        self.store = typestore_with_events()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._conn = self._writer.add_connection(topic, MATCHES_TYPE, typestore=self.store)
        self.count = 0
        self.marker_frame = marker_frame
        self.own_robot = own_robot  # other robots' matches in the fleet colour, as the node draws them
        self._markers = (self._writer.add_connection(markers_topic, MARKER_ARRAY, typestore=self.store)
                         if markers_topic else None)
        self._marker_ids = itertools.count(step=2)  # start ids as the node numbers them
        self.marker_arrays = 0

    def write(self, out: PipelineOutput, log_time_ns: int | None = None) -> None:
        if not out.events:
            return
        T = self.store.types
        msg = T[MATCHES_TYPE](header=T["std_msgs/msg/Header"](stamp=_time(self.store, out.stamp_ns), frame_id=out.frame_id),
                              events=[_event(self.store, r) for r in out.events])
        log_ns = int(log_time_ns if log_time_ns is not None else out.stamp_ns)
        self._writer.write(self._conn, log_ns, self.store.serialize_cdr(msg, MATCHES_TYPE))
        self.count += 1
        if self._markers is not None:
            specs = match_markers(out.events, next(self._marker_ids) * 64, own_robot=self.own_robot)
            if specs:
                arr = marker_array_msg(self.store, out.stamp_ns, self.marker_frame, specs)
                self._writer.write(self._markers, log_ns, self.store.serialize_cdr(arr, MARKER_ARRAY))
                self.marker_arrays += 1

    def copy_from(self, bags: Sequence[str | Path], topics: Iterable[str], *, reader: Any = None) -> dict[str, int]:
        """Copy ``topics`` of ``bags`` into this bag unchanged (``bag.writer.copy_topics``; ``reader``: an open
        ``AnyReader`` of ``bags``)."""
        return copy_topics(bags, self._writer, topics, reader=reader)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "EventBagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
