"""Write rosbag2 bags (sqlite3 or mcap) with ``rosbags`` and its typestore: no rclpy, no ROS installation needed.

:class:`BagWriter` wraps ``rosbags.rosbag2.Writer``; the ``*_msg`` helpers build typestore messages from numpy data
through the project's codecs (``core.pointcloud``, ``core.image``), so the simulator and the importers publish exactly
the wire layout the readers decode. Bag timestamps are the header stamps (int nanoseconds).

Message types come from the ROS 2 Kilted typestore by default (``Stores.ROS2_JAZZY`` is identical for every type
used here). ``/tf_static`` is recorded with a transient-local QoS profile so ``ros2 bag play`` latches it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import BagError, ConfigError
from cmr_fusion_ros.core.image import encode_compressed, encode_image
from cmr_fusion_ros.core.pointcloud import encode_cloud

__all__ = [
    "STORAGES",
    "BagWriter",
    "camera_info_msg",
    "cloud_msg",
    "compressed_image_msg",
    "default_typestore",
    "header_msg",
    "copy_topics",
    "default_msg",
    "image_msg",
    "marker_array_msg",
    "odometry_msg",
    "tf_message",
    "transform_msg",
]

STORAGES = ("mcap", "sqlite3")

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
CLOUD = "sensor_msgs/msg/PointCloud2"
ODOMETRY = "nav_msgs/msg/Odometry"
TF = "tf2_msgs/msg/TFMessage"


def default_typestore(distro: str = "kilted") -> Any:
    from rosbags.typesys import Stores, get_typestore

    stores = {"kilted": Stores.ROS2_KILTED, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ConfigError("typestore", distro, " | ".join(stores))
    return get_typestore(stores[distro])


def _qos(latched: bool) -> list[Any]:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [
        Qos(
            history=QosHistory.KEEP_LAST,
            depth=1 if latched else 10,
            reliability=QosReliability.RELIABLE,
            durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
            deadline=zero,
            lifespan=zero,
            liveliness=QosLiveliness.AUTOMATIC,
            liveliness_lease_duration=zero,
            avoid_ros_namespace_conventions=False,
        )
    ]


class BagWriter:
    """A rosbag2 directory being written. Use as a context manager (an exception in the block removes the partial
    bag); topics are added on first use or explicitly."""

    def __init__(self, path: str | Path, *, storage: str = "mcap", typestore: Any = None,
                 custom_data: dict[str, str] | None = None) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ConfigError("storage", storage, " | ".join(STORAGES))
        self.path = Path(path)
        if self.path.exists():
            raise BagError(str(self.path), "already exists; refusing to overwrite a bag")
        self.typestore = typestore if typestore is not None else default_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, str(value))
        self._connections: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._open = False

    def __enter__(self) -> "BagWriter":
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Close; if the block failed, remove the half-written bag (the directory did not exist before: ours)."""
        try:
            self.close()
        finally:
            if exc_type is not None and self.path.is_dir():
                import shutil

                shutil.rmtree(self.path, ignore_errors=True)

    def open(self) -> None:
        try:
            self._writer.open()
        except Exception as err:  # rosbags raises its own WriterError and OSError
            raise BagError(str(self.path), f"cannot open for writing: {err}") from err
        self._open = True

    def close(self) -> None:
        if self._open:
            self._writer.close()
            self._open = False

    def add_topic(self, topic: str, msgtype: str, *, latched: bool = False) -> None:
        if topic in self._connections:
            if self._types[topic] != msgtype:
                raise BagError(str(self.path), f"topic {topic} already has type {self._types[topic]}, not {msgtype}")
            return
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=_qos(latched)
        )
        self._types[topic] = msgtype
        self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, msg: Any, msgtype: str | None = None) -> None:
        """Serialise `msg` (a typestore message) to CDR and write it at bag time `stamp_ns`."""
        msgtype = msgtype or msg.__msgtype__
        if topic not in self._connections:
            self.add_topic(topic, msgtype, latched=topic == "/tf_static")
        data = self.typestore.serialize_cdr(msg, msgtype)
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.counts[topic] += 1


# ------------------------------------------------------------------------------------------------ message builders
def _time(ts: Any, stamp_ns: int) -> Any:
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)


def header_msg(ts: Any, stamp_ns: int, frame_id: str) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, stamp_ns), frame_id=frame_id)


def image_msg(ts: Any, stamp_ns: int, frame_id: str, image: np.ndarray, encoding: str = "rgb8") -> Any:
    wire = encode_image(image, encoding)
    return ts.types[IMAGE](
        header=header_msg(ts, stamp_ns, frame_id), height=wire.height, width=wire.width, encoding=wire.encoding,
        is_bigendian=int(wire.is_bigendian), step=wire.step, data=np.frombuffer(wire.data, dtype=np.uint8),
    )


def compressed_image_msg(ts: Any, stamp_ns: int, frame_id: str, image: np.ndarray, encoding: str = "rgb8",
                         quality: int = 90) -> Any:
    fmt, data = encode_compressed(image, encoding, "jpeg", quality)
    return compressed_bytes_msg(ts, stamp_ns, frame_id, fmt, data)


def compressed_bytes_msg(ts: Any, stamp_ns: int, frame_id: str, fmt: str, data: bytes) -> Any:
    return ts.types[COMPRESSED](header=header_msg(ts, stamp_ns, frame_id), format=fmt,
                                data=np.frombuffer(data, dtype=np.uint8))


def camera_info_msg(ts: Any, stamp_ns: int, frame_id: str, width: int, height: int, K: np.ndarray,
                    D: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0), distortion_model: str = "plumb_bob") -> Any:
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[CAMERA_INFO](
        header=header_msg(ts, stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model=distortion_model, d=np.asarray(D, dtype=np.float64), k=K.reshape(-1), r=np.eye(3).reshape(-1),
        p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi,
    )


def cloud_msg(ts: Any, stamp_ns: int, frame_id: str, points: np.ndarray) -> Any:
    wire = encode_cloud(points)
    PF = ts.types["sensor_msgs/msg/PointField"]
    fields = [PF(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in wire.fields]
    return ts.types[CLOUD](
        header=header_msg(ts, stamp_ns, frame_id), height=wire.height, width=wire.width, fields=fields,
        is_bigendian=wire.is_bigendian, point_step=wire.point_step, row_step=wire.row_step,
        data=np.frombuffer(wire.data, dtype=np.uint8), is_dense=wire.is_dense,
    )


def _vec3(ts: Any, v: Iterable[float]) -> Any:
    x, y, z = (float(a) for a in v)
    return ts.types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)


def _quat(ts: Any, q: Iterable[float]) -> Any:
    x, y, z, w = (float(a) for a in q)
    return ts.types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)


def transform_msg(ts: Any, stamp_ns: int, parent: str, child: str, translation: Iterable[float],
                  quat_xyzw: Iterable[float]) -> Any:
    tf = ts.types["geometry_msgs/msg/Transform"](translation=_vec3(ts, translation), rotation=_quat(ts, quat_xyzw))
    return ts.types["geometry_msgs/msg/TransformStamped"](header=header_msg(ts, stamp_ns, parent),
                                                          child_frame_id=child, transform=tf)


def tf_message(ts: Any, transforms: Sequence[Any]) -> Any:
    return ts.types[TF](transforms=list(transforms))


def odometry_msg(ts: Any, stamp_ns: int, frame_id: str, child_frame_id: str, position: Iterable[float],
                 quat_xyzw: Iterable[float], linear: Iterable[float] = (0.0, 0.0, 0.0),
                 angular: Iterable[float] = (0.0, 0.0, 0.0), pose_cov: np.ndarray | None = None,
                 twist_cov: np.ndarray | None = None) -> Any:
    """nav_msgs/Odometry: pose in `frame_id`, twist in `child_frame_id` (REP 105)."""
    x, y, z = (float(a) for a in position)
    pose = ts.types["geometry_msgs/msg/Pose"](position=ts.types["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                              orientation=_quat(ts, quat_xyzw))
    twist = ts.types["geometry_msgs/msg/Twist"](linear=_vec3(ts, linear), angular=_vec3(ts, angular))
    pc = np.zeros(36) if pose_cov is None else np.asarray(pose_cov, dtype=np.float64).reshape(36)
    tc = np.zeros(36) if twist_cov is None else np.asarray(twist_cov, dtype=np.float64).reshape(36)
    return ts.types[ODOMETRY](
        header=header_msg(ts, stamp_ns, frame_id), child_frame_id=child_frame_id,
        pose=ts.types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=pc),
        twist=ts.types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=tc),
    )


_ZERO = {"bool": False, "string": "", "wstring": ""}
_NUMPY = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
          "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
          "uint64": np.uint64, "float32": np.float32, "float64": np.float64}


def default_msg(ts: Any, msgtype: str, **fields: Any) -> Any:
    """A typestore message of ``msgtype`` with every field at its ROS default (zeros, empty strings and sequences),
    except ``fields``: rosbags' message classes take every field, ROS messages default the ones not given."""
    from rosbags.interfaces import Nodetype

    def default(node: tuple) -> Any:
        kind, arg = node
        if kind == Nodetype.BASE:  # (type name, string bound)
            name = arg[0]
            return _ZERO.get(name, 0.0 if name.startswith("float") else 0)
        if kind == Nodetype.NAME:  # a nested message
            return default_msg(ts, arg)
        sub, length = arg  # ARRAY (fixed length) or SEQUENCE
        count = length if kind == Nodetype.ARRAY else 0
        if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
            return np.zeros(count, dtype=_NUMPY[sub[1][0]])
        return [default(sub) for _ in range(count)]

    values = {name: fields[name] if name in fields else default(node) for name, node in ts.fielddefs[msgtype][1]}
    return ts.types[msgtype](**values)


MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"


def marker_array_msg(ts: Any, stamp_ns: int, frame_id: str, specs: Sequence[Any]) -> Any:
    """``visualization_msgs/MarkerArray`` of :class:`cmr_fusion_ros.core.match_markers.MarkerSpec` (what the live
    nodes publish on ``~/markers``)."""
    T = ts.types
    line, text = T["visualization_msgs/msg/Marker"].LINE_LIST, T["visualization_msgs/msg/Marker"].TEXT_VIEW_FACING
    out = []
    for s in specs:
        point = lambda x, y, z: T["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z))  # noqa: E731
        pose = T["geometry_msgs/msg/Pose"](position=point(*s.position), orientation=_quat(ts, (0.0, 0.0, 0.0, 1.0)))
        scale = _vec3(ts, (s.scale, 0.0, 0.0) if s.kind == "line" else (0.0, 0.0, s.scale))
        life = _time(ts, s.lifetime_ns)
        out.append(default_msg(
            ts, "visualization_msgs/msg/Marker", header=header_msg(ts, stamp_ns, frame_id), ns=s.ns, id=int(s.id),
            type=line if s.kind == "line" else text, action=T["visualization_msgs/msg/Marker"].ADD, pose=pose,
            scale=scale, color=T["std_msgs/msg/ColorRGBA"](r=s.rgba[0], g=s.rgba[1], b=s.rgba[2], a=s.rgba[3]),
            lifetime=T["builtin_interfaces/msg/Duration"](sec=life.sec, nanosec=life.nanosec),
            points=[point(*p) for p in s.points], text=s.text))
    return T[MARKER_ARRAY](markers=out)


def copy_topics(sources: Sequence[str | Path], writer: Any, topics: Iterable[str], *,
                reader: Any = None) -> dict[str, int]:
    """Copy the messages of ``topics`` from the bags ``sources`` into the open ``rosbags.rosbag2.Writer`` ``writer``
    as they are: same CDR bytes, bag times, message definitions and offered QoS (``/tf_static`` stays latched).
    ``reader``: an open ``AnyReader`` of ``sources`` to read them with (else one is opened). Returns the messages
    copied per topic (topics the bags lack are skipped)."""
    from rosbags.highlevel import AnyReader

    from cmr_fusion_ros.bag.positions import raw_messages

    wanted = set(topics)
    counts: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as stack:
            if reader is None:
                reader = stack.enter_context(AnyReader([Path(s) for s in sources]))
            conns = [c for c in reader.connections if c.topic in wanted]
            out: dict[tuple[str, str], Any] = {}
            for c in conns:
                key = (c.topic, c.msgtype)
                if key not in out:
                    qos = getattr(c.ext, "offered_qos_profiles", ())
                    out[key] = writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest,
                                                     offered_qos_profiles=qos)
                    counts.setdefault(c.topic, 0)
            # only these topics' records are read (100 Hz odometry has a message in every chunk of the bag)
            for c, stamp, raw in raw_messages(reader, conns):
                writer.write(out[(c.topic, c.msgtype)], stamp, raw)
                counts[c.topic] += 1
    except BagError:
        raise
    except Exception as err:  # rosbags raises several untyped errors on unreadable bags
        raise BagError(", ".join(str(s) for s in sources), f"cannot copy {sorted(wanted)}: {err}") from err
    return counts
