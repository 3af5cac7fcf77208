"""Write rosbag2 bags (sqlite3 or mcap) with ``rosbags`` and its typestore: no rclpy, no ROS installation needed.

:class:`BagWriter` wraps ``rosbags.rosbag2.Writer``; the ``*_msg`` helpers build typestore messages from numpy data
through the project's codecs (``core.pointcloud``, ``core.image``), so the simulator and the importers publish exactly
the wire layout the readers decode. Bag timestamps are the header stamps (int nanoseconds).

Message types come from the ROS 2 Kilted typestore by default (``Stores.ROS2_JAZZY`` is identical for every type
used here). ``/tf_static`` is recorded with a transient-local QoS profile so ``ros2 bag play`` latches it.
"""

from __future__ import annotations

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
    "image_msg",
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
