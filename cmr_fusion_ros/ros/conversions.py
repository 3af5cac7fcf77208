"""sensor_msgs <-> numpy for rclpy messages: thin wrappers over the pure-numpy codecs in ``core``.

``sensor_msgs`` ``uint8[]`` fields are ``array.array('B')`` in rclpy; assigning ``bytes`` would run the generated
setter's per-element check, so data is always handed over as an ``array.array`` built with ``frombytes`` (one copy).
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from sensor_msgs.msg import PointField as RosPointField
from std_msgs.msg import Header

from cmr_fusion_ros.core.image import decode_compressed, decode_image, encode_compressed, encode_image
from cmr_fusion_ros.core.pointcloud import decode_cloud, encode_cloud
from cmr_fusion_ros.core.radar import RadarFields, radar_array

__all__ = [
    "array_to_pointcloud2",
    "compressed_to_numpy",
    "image_to_numpy",
    "make_header",
    "numpy_to_compressed",
    "numpy_to_image",
    "pointcloud2_to_array",
    "pointcloud2_to_radar",
    "stamp_to_ns",
    "ns_to_stamp",
]


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def make_header(stamp_ns: int = 0, frame_id: str = "") -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def _byte_array(data: bytes) -> array.array:
    out = array.array("B")
    out.frombytes(data)
    return out


def image_to_numpy(msg: Image) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` array in the message's encoding (see ``core.image.ENCODINGS``)."""
    return decode_image(msg)


def numpy_to_image(image: np.ndarray, encoding: str, header: Header | None = None, *, is_bigendian: bool = False) -> Image:
    wire = encode_image(image, encoding, is_bigendian=is_bigendian)
    msg = Image(header=header or Header(), height=wire.height, width=wire.width, encoding=wire.encoding,
                is_bigendian=int(wire.is_bigendian), step=wire.step)
    msg.data = _byte_array(wire.data)
    return msg


def compressed_to_numpy(msg: CompressedImage, desired_encoding: str = "rgb8") -> np.ndarray:
    return decode_compressed(msg, desired_encoding)


def numpy_to_compressed(image: np.ndarray, encoding: str, header: Header | None = None, *, fmt: str = "jpeg",
                        quality: int = 90) -> CompressedImage:
    format_string, data = encode_compressed(image, encoding, fmt, quality)
    msg = CompressedImage(header=header or Header(), format=format_string)
    msg.data = _byte_array(data)
    return msg


def pointcloud2_to_array(msg: PointCloud2, *, skip_nans: bool = False, organized: bool | None = None) -> np.ndarray:
    """Structured array with the message's fields; ``(H, W)`` for organised clouds unless flattened."""
    return decode_cloud(msg, skip_nans=skip_nans, organized=organized)


def array_to_pointcloud2(points: np.ndarray, header: Header | None = None, *, is_bigendian: bool = False) -> PointCloud2:
    wire = encode_cloud(points, is_bigendian=is_bigendian)
    msg = PointCloud2(
        header=header or Header(),
        height=wire.height,
        width=wire.width,
        fields=[RosPointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in wire.fields],
        is_bigendian=wire.is_bigendian,
        point_step=wire.point_step,
        row_step=wire.row_step,
        is_dense=wire.is_dense,
    )
    msg.data = _byte_array(wire.data)
    return msg


def pointcloud2_to_radar(msg: PointCloud2, names: RadarFields = RadarFields()) -> np.ndarray:
    """A radar PointCloud2 with configurable field names as x, y, z, doppler, rcs float32 (NaN returns dropped)."""
    return radar_array(decode_cloud(msg, skip_nans=True), names)
