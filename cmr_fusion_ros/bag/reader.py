"""Read a rosbag2 bag (sqlite3 or mcap, via ``rosbags``) into per-modality sensor samples with poses.

Each :class:`SensorSample` holds the modality, topic, ``frame_id``, header stamp (int ns), the decoded numpy data and
the vehicle pose at that stamp, from the ``nav_msgs/Odometry`` topic through the runtime's pose buffer
(:class:`~cmr_fusion_ros.core.poses.PoseBuffer`: the same interpolation and gap rule as ``odometry.max_gap_s`` /
``max_extrapolation_s``). Messages are decoded by the runtime's decoder (:func:`cmr_fusion_ros.core.decode.frame_from`:
the same input limits, the same finite-point filter), so evaluation and training see what the nodes see:

- camera: ``H x W x 3`` uint8 RGB (``sensor_msgs/Image`` of a colour encoding, or ``CompressedImage``);
- lidar: the cloud as a structured array (every field of the message, points with a non-finite x/y/z dropped);
- radar: a structured array with the canonical fields ``x, y, z, doppler, rcs`` (float32), taken from the message
  fields named in :attr:`BagTopics.radar_fields`.

Topic names and radar field names are configurable, so users' own bags work. The reader is a plain iterator in
receive-time order: evaluation and the training data loader share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.core.config import InputLimits
from cmr_fusion_ros.core.decode import DEFAULT_LIMITS, SensorInfo, frame_from, header_stamp_ns
from cmr_fusion_ros.core.errors import BagError, CmrFusionError, ConfigError, ConversionError
from cmr_fusion_ros.core.poses import DEFAULT_MAX_EXTRAPOLATION_NS, DEFAULT_MAX_GAP_NS, PoseBuffer
from cmr_fusion_ros.core.radar import RadarFields
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = ["BagTopics", "SensorSample", "read_samples", "read_pose_track", "RADAR_FIELDS"]

RADAR_FIELDS = ("x", "y", "z", "doppler", "rcs")
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CLOUD = "sensor_msgs/msg/PointCloud2"
ODOM = "nav_msgs/msg/Odometry"


@dataclass(frozen=True, slots=True)
class BagTopics:
    """Which topics hold what. ``camera`` may list several candidates: the first one present in the bag is used.

    ``max_gap_ns`` / ``max_extrapolation_ns``: the pose buffer's gap rule (``odometry.max_gap_s`` /
    ``max_extrapolation_s``, same defaults): a sample between two odometry messages further apart than
    ``max_gap_ns``, or outside the odometry by more than ``max_extrapolation_ns``, has no pose.
    """

    camera: tuple[str, ...] = ("/camera/image/compressed", "/camera/image")
    lidar: str = "/lidar/points"
    radar: str = "/radar/points"
    odom: str = "/odom"
    radar_fields: tuple[str, str, str, str, str] = RADAR_FIELDS
    max_gap_ns: int = DEFAULT_MAX_GAP_NS
    max_extrapolation_ns: int = DEFAULT_MAX_EXTRAPOLATION_NS

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
        for key in ("max_gap_ns", "max_extrapolation_ns"):
            v = getattr(self, key)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise ConfigError(f"topics.{key}", v, "an integer >= 0 (nanoseconds)")

    @property
    def radar_names(self) -> RadarFields:
        """``radar_fields`` as the decoder takes them."""
        return RadarFields(*self.radar_fields)


@dataclass(frozen=True, slots=True)
class SensorSample:
    modality: Modality
    topic: str
    frame_id: str
    stamp_ns: int
    data: np.ndarray
    pose: Pose | None
    sensor: SensorInfo | None = None
    reduction: int = 1  # a camera JPEG decoded at 1/reduction of its size (camera_size)


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


def _track_from(reader: Any, path: str | Path, topics: BagTopics) -> PoseBuffer:
    conns = [c for c in reader.connections if c.topic == topics.odom]
    if not conns:
        raise BagError(str(path), f"no odometry topic {topics.odom}; topics: {sorted({c.topic for c in reader.connections})}")
    if conns[0].msgtype != ODOM:
        raise BagError(str(path), f"{topics.odom} is {conns[0].msgtype}, expected {ODOM}")
    stamps, poses = [], []
    for conn, _, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        stamps.append(header_stamp_ns(msg))
        poses.append(Pose(float(p.x), float(p.y), float(p.z), float(q.x), float(q.y), float(q.z), float(q.w)))
    return PoseBuffer.of(stamps, poses, max_gap_ns=topics.max_gap_ns, max_extrapolation_ns=topics.max_extrapolation_ns)


def read_pose_track(path: str | Path, topics: BagTopics | None = None) -> PoseBuffer:
    """All odometry poses of a bag, in a pose buffer with the gap rule of ``topics``."""
    topics = topics or BagTopics()
    reader = _open(path)
    try:
        return _track_from(reader, path, topics)
    finally:
        reader.close()


def count_rejected(rejected: dict[str, int]) -> Callable[[str, CmrFusionError], None]:
    """An ``on_bad`` for :func:`read_samples` that skips a message the decoder rejects and counts it in ``rejected``
    under ``"TOPIC: TYPE.FIELD"`` (an empty point cloud, a cloud without a finite point, ...), as ``process`` and the
    nodes skip and count them; the commands that read bags for training and evaluation report the counts."""

    def on_bad(topic: str, err: CmrFusionError) -> None:
        where = f"{err.msg_type}.{err.field}" if isinstance(err, ConversionError) else type(err).__name__
        key = f"{topic}: {where}"
        rejected[key] = rejected.get(key, 0) + 1

    return on_bad


def read_samples(
    path: str | Path,
    topics: BagTopics | None = None,
    modalities: Sequence[Modality | str] = tuple(Modality),
    *,
    require_pose: bool = True,
    dropped: dict[str, int] | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    on_bad: Callable[[str, CmrFusionError], None] | None = None,
    sensors: dict[str, SensorInfo] | None = None,
    camera_size: tuple[int, int] | None = None,
) -> Iterator[SensorSample]:
    """Iterate the bag's sensor messages of ``modalities`` in receive order, decoded, with interpolated poses.

    With ``require_pose`` (default) the odometry topic must exist and samples outside its coverage are skipped
    (counted per modality in ``dropped`` when given: nothing is dropped silently); without it, samples carry
    ``pose=None`` when there is no odometry. Raises :class:`BagError` when a requested modality's topic is not in
    the bag or has an unexpected type. A message the decoder rejects (``limits``, no
    finite point, a missing field) raises its :class:`ConversionError`, or with ``on_bad`` is passed to
    ``on_bad(topic, error)`` and skipped (as ``cmr-fusion process`` skips it). ``sensors``: optional
    :class:`SensorInfo` per topic, carried on the samples. ``camera_size``: the camera encoder's input (width,
    height; ``FrameEmbedder.decode_size``): JPEG images are decoded directly at 1/2, 1/4 or 1/8 of their size when
    that is still at least this large, as the runtime decodes them.
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
            track = PoseBuffer.of([], [])
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, _, raw in reader.messages(connections=conns):
            mod = wanted[conn.topic]
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as err:  # rosbags' CDR errors have no common base
                raise BagError(str(path), f"cannot deserialize a {conn.msgtype} on {conn.topic}: {err}") from err
            stamp = header_stamp_ns(msg)
            pose = track.lookup(stamp)
            if pose is None and require_pose:
                if dropped is not None:
                    dropped[mod.value] = dropped.get(mod.value, 0) + 1
                continue
            info = sensors.get(conn.topic) if sensors else None
            try:
                frame = frame_from(mod, conn.topic, msg, compressed=conn.msgtype == COMPRESSED,
                                   radar_fields=topics.radar_names, stamp_ns=stamp, limits=limits, sensor=info,
                                   min_size=camera_size)
            except CmrFusionError as err:
                if on_bad is None:
                    raise
                on_bad(conn.topic, err)
                continue
            yield SensorSample(mod, conn.topic, frame.frame_id, stamp, frame.data, pose, info, frame.reduction)
    finally:
        reader.close()
