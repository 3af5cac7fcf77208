"""Read a rosbag2 bag (sqlite3 or mcap, via ``rosbags``) into per-modality sensor samples with poses.

Each :class:`SensorSample` holds the modality, topic, ``frame_id``, header stamp (int ns), the decoded numpy data and
the vehicle pose at that stamp, interpolated from the ``nav_msgs/Odometry`` topic (linear in position, spherical
linear in orientation). Decoded data:

- camera: ``H x W x 3`` uint8 RGB (``sensor_msgs/Image`` of any colour encoding, or ``CompressedImage``);
- lidar: the cloud as a structured array (every field of the message, NaN points dropped);
- radar: a structured array with the canonical fields ``x, y, z, doppler, rcs`` (float32), taken from the message
  fields named in :attr:`BagTopics.radar_fields`.

Topic names and radar field names are configurable, so users' own bags work. The reader is a plain iterator in
receive-time order: the pipeline's offline mode and the training data loader share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import BagError, ConfigError, ConversionError
from cmr_fusion_ros.core.image import convert_color, decode_compressed, decode_image
from cmr_fusion_ros.core.pointcloud import decode_cloud
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = ["BagTopics", "PoseTrack", "SensorSample", "read_samples", "read_pose_track", "RADAR_FIELDS"]

RADAR_FIELDS = ("x", "y", "z", "doppler", "rcs")
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CLOUD = "sensor_msgs/msg/PointCloud2"
ODOM = "nav_msgs/msg/Odometry"


@dataclass(frozen=True, slots=True)
class BagTopics:
    """Which topics hold what. ``camera`` may list several candidates: the first one present in the bag is used.

    ``max_pose_gap_ns``: a sample gets a pose only if odometry exists within this time on both sides of its stamp
    (or, at the ends of the track, this close to the first/last odometry message).
    """

    camera: tuple[str, ...] = ("/camera/image/compressed", "/camera/image")
    lidar: str = "/lidar/points"
    radar: str = "/radar/points"
    odom: str = "/odom"
    radar_fields: tuple[str, str, str, str, str] = RADAR_FIELDS
    max_pose_gap_ns: int = 200_000_000

    def __post_init__(self) -> None:
        cams = (self.camera,) if isinstance(self.camera, str) else tuple(self.camera)
        if not cams or not all(isinstance(c, str) and c.startswith("/") for c in cams):
            raise ConfigError("topics.camera", self.camera, "one or more absolute topic names")
        object.__setattr__(self, "camera", cams)
        for key in ("lidar", "radar", "odom"):
            v = getattr(self, key)
            if not (isinstance(v, str) and v.startswith("/")):
                raise ConfigError(f"topics.{key}", v, "an absolute topic name, e.g. /lidar/points")
        rf = tuple(self.radar_fields)
        if len(rf) != 5 or not all(isinstance(f, str) and f for f in rf) or len(set(rf)) != 5:
            raise ConfigError("topics.radar_fields", self.radar_fields, "5 distinct field names for x, y, z, doppler, rcs")
        object.__setattr__(self, "radar_fields", rf)
        if not (isinstance(self.max_pose_gap_ns, int) and self.max_pose_gap_ns > 0):
            raise ConfigError("topics.max_pose_gap_ns", self.max_pose_gap_ns, "an integer > 0 (nanoseconds)")


@dataclass(frozen=True, slots=True)
class SensorSample:
    modality: Modality
    topic: str
    frame_id: str
    stamp_ns: int
    data: np.ndarray
    pose: Pose | None


@dataclass(frozen=True)
class PoseTrack:
    """Odometry poses sorted by stamp: ``stamps_ns`` (N,), ``positions`` (N, 3), ``quaternions`` (N, 4) x y z w."""

    stamps_ns: np.ndarray
    positions: np.ndarray
    quaternions: np.ndarray
    max_gap_ns: int = 200_000_000

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    def at(self, stamp_ns: int) -> Pose | None:
        """Interpolated pose at ``stamp_ns``; None when odometry does not cover that time (see ``max_gap_ns``)."""
        t = self.stamps_ns
        n = len(t)
        if n == 0:
            return None
        i = int(np.searchsorted(t, stamp_ns, side="right"))
        if i == 0 or i == n:
            j = 0 if i == 0 else n - 1
            if abs(int(t[j]) - stamp_ns) > self.max_gap_ns:
                return None
            return _pose(self.positions[j], self.quaternions[j])
        t0, t1 = int(t[i - 1]), int(t[i])
        if t1 - t0 > 2 * self.max_gap_ns:
            return None
        a = (stamp_ns - t0) / (t1 - t0) if t1 > t0 else 0.0
        p = self.positions[i - 1] * (1 - a) + self.positions[i] * a
        return _pose(p, _slerp(self.quaternions[i - 1], self.quaternions[i], a))


def _pose(p: np.ndarray, q: np.ndarray) -> Pose:
    return Pose(float(p[0]), float(p[1]), float(p[2]), float(q[0]), float(q[1]), float(q[2]), float(q[3]))


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    return (math.sin((1 - a) * theta) * q0 + math.sin(a * theta) * q1) / s


def _stamp_ns(msg: Any) -> int:
    st = msg.header.stamp
    return int(st.sec) * 1_000_000_000 + int(st.nanosec)


def _open(path: str | Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    p = Path(path)
    if not p.exists():
        raise BagError(str(p), "no such bag")
    try:
        reader = AnyReader([p], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except Exception as err:  # rosbags raises several unrelated error types
        raise BagError(str(p), f"cannot open as a rosbag2 bag: {err}") from err
    return reader


def _track_from(reader: Any, path: str | Path, topics: BagTopics) -> PoseTrack:
    conns = [c for c in reader.connections if c.topic == topics.odom]
    if not conns:
        raise BagError(str(path), f"no odometry topic {topics.odom}; topics: {sorted({c.topic for c in reader.connections})}")
    if conns[0].msgtype != ODOM:
        raise BagError(str(path), f"{topics.odom} is {conns[0].msgtype}, expected {ODOM}")
    stamps, pos, quat = [], [], []
    for conn, _, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        stamps.append(_stamp_ns(msg))
        pos.append((p.x, p.y, p.z))
        quat.append((q.x, q.y, q.z, q.w))
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    return PoseTrack(
        np.asarray(stamps, dtype=np.int64)[order],
        np.asarray(pos, dtype=np.float64).reshape(-1, 3)[order],
        np.asarray(quat, dtype=np.float64).reshape(-1, 4)[order],
        topics.max_pose_gap_ns,
    )


def read_pose_track(path: str | Path, topics: BagTopics | None = None) -> PoseTrack:
    """All odometry poses of a bag."""
    topics = topics or BagTopics()
    reader = _open(path)
    try:
        return _track_from(reader, path, topics)
    finally:
        reader.close()


def _radar_canonical(cloud: np.ndarray, names: tuple[str, ...], topic: str) -> np.ndarray:
    have = cloud.dtype.names or ()
    for name in names:
        if name not in have:
            raise ConversionError(CLOUD, name, f"radar field missing on {topic}; the cloud has {list(have)}")
    out = np.empty(cloud.shape[0], dtype=[(n, np.float32) for n in RADAR_FIELDS])
    for canon, name in zip(RADAR_FIELDS, names):
        out[canon] = cloud[name]
    return out


def _decode(modality: Modality, msgtype: str, msg: Any, topics: BagTopics, topic: str) -> np.ndarray:
    if modality is Modality.CAMERA:
        if msgtype == COMPRESSED:
            return decode_compressed(msg, "rgb8")
        img = decode_image(msg)
        enc = str(msg.encoding)
        return img if enc == "rgb8" else convert_color(img, enc, "rgb8")
    cloud = decode_cloud(msg, skip_nans=True, organized=False)
    if modality is Modality.RADAR:
        return _radar_canonical(cloud, topics.radar_fields, topic)
    return cloud


def read_samples(
    path: str | Path,
    topics: BagTopics | None = None,
    modalities: Sequence[Modality | str] = tuple(Modality),
    *,
    require_pose: bool = True,
    dropped: dict[str, int] | None = None,
) -> Iterator[SensorSample]:
    """Iterate the bag's sensor messages of ``modalities`` in receive order, decoded, with interpolated poses.

    With ``require_pose`` (default) the odometry topic must exist and samples outside its coverage are skipped
    (counted per modality in ``dropped`` when given: nothing is dropped silently); without it, samples carry
    ``pose=None`` when there is no odometry. Raises :class:`BagError` when a requested
    modality's topic is not in the bag or has an unexpected type.
    """
    topics = topics or BagTopics()
    mods = [Modality(m) for m in modalities]
    reader = _open(path)
    try:
        present = {c.topic: c.msgtype for c in reader.connections}
        wanted: dict[str, Modality] = {}
        for mod in mods:
            if mod is Modality.CAMERA:
                topic = next((t for t in topics.camera if t in present), None)
                if topic is None:
                    raise BagError(str(path), f"no camera topic among {list(topics.camera)}; topics: {sorted(present)}")
                if present[topic] not in (IMAGE, COMPRESSED):
                    raise BagError(str(path), f"{topic} is {present[topic]}, expected {IMAGE} or {COMPRESSED}")
            else:
                topic = topics.lidar if mod is Modality.LIDAR else topics.radar
                if topic not in present:
                    raise BagError(str(path), f"no {mod.value} topic {topic}; topics: {sorted(present)}")
                if present[topic] != CLOUD:
                    raise BagError(str(path), f"{topic} is {present[topic]}, expected {CLOUD}")
            wanted[topic] = mod
        if topics.odom in present or require_pose:
            track = _track_from(reader, path, topics)
            if require_pose and len(track) == 0:
                raise BagError(str(path), f"no messages on the odometry topic {topics.odom}")
        else:
            track = PoseTrack(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 4)))
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, _, raw in reader.messages(connections=conns):
            mod = wanted[conn.topic]
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as err:  # rosbags' CDR errors have no common base
                raise BagError(str(path), f"cannot deserialize a {conn.msgtype} on {conn.topic}: {err}") from err
            stamp = _stamp_ns(msg)
            pose = track.at(stamp)
            if pose is None and require_pose:
                if dropped is not None:
                    dropped[mod.value] = dropped.get(mod.value, 0) + 1
                continue
            yield SensorSample(
                modality=mod,
                topic=conn.topic,
                frame_id=str(msg.header.frame_id),
                stamp_ns=stamp,
                data=_decode(mod, conn.msgtype, msg, topics, conn.topic),
                pose=pose,
            )
    finally:
        reader.close()
