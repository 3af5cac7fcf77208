"""Sensor message -> frame: the one decoding route of the live nodes, offline processing, evaluation and training.

Every sensor message (an rclpy message or a ``rosbags`` object) is checked against the input limits
(:class:`InputLimits`: pixels, points, bytes, read from the header before anything is decoded), decoded, and point
clouds lose their points with a non-finite coordinate (a cloud left empty is rejected). Malformed input raises
:class:`ConversionError` naming the field. No ROS import.

A :class:`Frame` carries the sensor's ``frame_id`` and an optional :class:`SensorInfo` (what is known about the
sensor beyond the message: its mount on the vehicle, camera intrinsics). The frame goes on unchanged to the
embedding step (:mod:`cmr_fusion_ros.core.embed`), which is where rig-aware preprocessing reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmr_fusion_ros.core.config import InputLimits
from cmr_fusion_ros.core.errors import ConversionError
from cmr_fusion_ros.core.image import convert_color, decode_compressed, decode_image
from cmr_fusion_ros.core.pointcloud import decode_cloud
from cmr_fusion_ros.core.radar import RadarFields, radar_array
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = [
    "DEFAULT_LIMITS",
    "Frame",
    "IMAGE_TYPES",
    "InputLimits",
    "SensorInfo",
    "check_limits",
    "compressed_dims",
    "decode_sensor",
    "frame_from",
    "header_stamp_ns",
    "jpeg_reduction",
]


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """What is known about a sensor beyond its messages, for rig-aware preprocessing. Every field is optional: the
    route works without any of them.

    ``mount``: the sensor frame's pose in the vehicle base frame (e.g. from ``/tf_static``); ``camera_k``: the 3 x 3
    intrinsic matrix, row-major (``sensor_msgs/CameraInfo.k``); ``image_size``: (width, height) the intrinsics
    belong to.
    """

    frame_id: str = ""
    mount: Pose | None = None
    camera_k: tuple[float, ...] | None = None
    image_size: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded sensor message: ``data`` is what the modality's preprocessing takes (camera ``H x W x 3`` uint8
    RGB, LiDAR a structured cloud, radar the canonical x, y, z, doppler, rcs array). ``receive_ns``: when it arrived
    (the caller's clock); ``decode_ms``: how long decoding took; ``sensor``: see :class:`SensorInfo`; ``reduction``:
    a JPEG decoded directly at 1/``reduction`` of its size (see :func:`frame_from`)."""

    modality: Modality
    topic: str
    frame_id: str
    stamp_ns: int
    data: Any = field(compare=False, repr=False)
    receive_ns: int = 0
    decode_ms: float = 0.0
    sensor: SensorInfo | None = field(default=None, compare=False)
    reduction: int = 1  # a JPEG decoded at 1/reduction of its size (camera intrinsics scale by the same factor)


def header_stamp_ns(msg: Any) -> int:
    """A message's ``header.stamp`` as integer nanoseconds (rclpy or rosbags)."""
    st = msg.header.stamp
    return int(st.sec) * 1_000_000_000 + int(st.nanosec)


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_COLOUR = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}


# The limits are the ``limits`` section of FusionConfig (``InputLimits``, re-exported here); nodes and offline
# processing pass ``config.limits``. The defaults are the fallback of every decoding function.
DEFAULT_LIMITS = InputLimits()


def _data_size(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def compressed_dims(buf: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or a JPEG SOFn header, read without decoding; None when not found."""
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) >= 24 and buf[12:16] == b"IHDR":
        return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")
    if buf[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                return None
            return int.from_bytes(buf[pos + 7:pos + 9], "big"), int.from_bytes(buf[pos + 5:pos + 7], "big")
        if length < 2:
            return None
        pos += 2 + length
    return None


def check_limits(modality: Modality, msg: Any, *, compressed: bool, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`ConversionError` naming the field when ``msg`` claims more than ``limits`` allow."""
    if modality is Modality.CAMERA and compressed:
        kind = "sensor_msgs/CompressedImage"
        size = _data_size(msg.data)
        if size > limits.max_message_bytes:
            raise ConversionError(kind, "data", f"{size} bytes > limit {limits.max_message_bytes}")
        head = bytes(memoryview(msg.data)[:65536]) if size else b""
        dims = compressed_dims(head)
        if dims is not None:
            w, h = dims
            if w == 0 or h == 0:
                raise ConversionError(kind, "data", f"header declares an empty {w}x{h} image")
            if w * h > limits.max_image_pixels:
                raise ConversionError(kind, "data", f"header declares {w}x{h} = {w * h} pixels > limit "
                                                    f"{limits.max_image_pixels}")
        return
    if modality is Modality.CAMERA:
        kind = "sensor_msgs/Image"
        h, w = int(msg.height), int(msg.width)
        if h <= 0 or w <= 0:
            raise ConversionError(kind, "height/width", f"empty image {w}x{h}")
        if h * w > limits.max_image_pixels:
            raise ConversionError(kind, "height/width", f"{w}x{h} = {w * h} pixels > limit {limits.max_image_pixels}")
    else:
        kind = "sensor_msgs/PointCloud2"
        h, w = int(msg.height), int(msg.width)
        if h < 0 or w < 0 or h * w > limits.max_points:
            raise ConversionError(kind, "height/width", f"{w}x{h} = {w * h} points; allowed 0..{limits.max_points}")
    size = _data_size(msg.data)
    if size > limits.max_message_bytes:
        raise ConversionError(kind, "data", f"{size} bytes > limit {limits.max_message_bytes}")


def _finite_points(cloud: np.ndarray, modality: Modality, names: tuple[str, ...]) -> np.ndarray:
    """Drop points with a non-finite coordinate (NaN, Inf); a cloud left empty carries nothing to embed (and every
    empty cloud would embed alike, so they would all "match" each other): rejected."""
    flat = cloud.reshape(-1)
    have = [n for n in names if n in (flat.dtype.names or ())]
    for n in names[:3]:
        if n not in have:
            raise ConversionError("sensor_msgs/PointCloud2", f"fields[{n!r}]",
                                  f"field missing; the cloud has {list(flat.dtype.names or ())}")
    if have and flat.shape[0]:
        ok = np.ones(flat.shape[0], dtype=bool)
        for n in have:
            col = flat[n]
            if col.dtype.kind == "f":
                ok &= np.isfinite(col).reshape(col.shape[0], -1).all(axis=1)
        if not ok.all():
            flat = flat[ok]
    if flat.shape[0] == 0:
        raise ConversionError("sensor_msgs/PointCloud2", "data",
                              f"no {modality.value} point with finite {', '.join(have) or 'coordinates'}: nothing to embed")
    return flat


def jpeg_reduction(msg: Any, min_size: tuple[int, int] | None) -> int:
    """The largest of 8, 4, 2 at which a JPEG ``CompressedImage`` is still at least ``min_size`` (width, height)
    when decoded at that fraction of its size (:func:`decode_compressed`'s ``reduction``); 1 for anything else."""
    if not min_size:
        return 1
    size = _data_size(msg.data)
    dims = compressed_dims(bytes(memoryview(msg.data)[:65536])) if size else None
    if dims is None or bytes(memoryview(msg.data)[:2]) != b"\xff\xd8":
        return 1
    (w, h), (mw, mh) = dims, min_size
    for f in (8, 4, 2):
        if -(-w // f) >= mw and -(-h // f) >= mh:
            return f
    return 1


def decode_sensor(modality: Modality, msg: Any, *, compressed: bool, radar_fields: RadarFields = RadarFields(),
                  limits: InputLimits = DEFAULT_LIMITS, reduction: int = 1) -> np.ndarray:
    """Decode a sensor message (rclpy or rosbags object) into what the encoder of ``modality`` takes.

    camera: ``H x W x 3`` uint8 RGB (a JPEG at 1/``reduction`` of its size, see :func:`jpeg_reduction`); lidar:
    structured cloud, points with a non-finite x/y/z dropped; radar: x, y, z, doppler, rcs with non-finite rows
    dropped. Raises :class:`ConversionError` (naming the field) for anything malformed, beyond ``limits``, or left
    without a point.
    """
    check_limits(modality, msg, compressed=compressed, limits=limits)
    if modality is Modality.CAMERA:
        if compressed:
            img = decode_compressed(msg, "rgb8", reduction=reduction)
        else:
            enc = str(msg.encoding)
            if enc not in _COLOUR:
                raise ConversionError("sensor_msgs/Image", "encoding",
                                      f"camera encoders take colour images ({sorted(_COLOUR)}), got {enc!r}")
            img = convert_color(decode_image(msg), enc, "rgb8")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            raise ConversionError("sensor_msgs/Image", "data", f"decoded to shape {img.shape}, not H x W x 3")
        return img
    if int(msg.height) * int(msg.width) == 0:  # (decode_cloud's NaN filter fails on an empty cloud)
        raise ConversionError("sensor_msgs/PointCloud2", "height/width",
                              f"{int(msg.width)}x{int(msg.height)} = 0 points: nothing to embed")
    cloud = decode_cloud(msg, skip_nans=True)
    if modality is Modality.RADAR:
        return _finite_points(radar_array(cloud, radar_fields), modality, ("x", "y", "z", "doppler", "rcs"))
    return _finite_points(cloud, modality, ("x", "y", "z"))


def frame_from(modality: Modality, topic: str, msg: Any, *, compressed: bool,
               radar_fields: RadarFields = RadarFields(), stamp_ns: int | None = None, receive_ns: int = 0,
               limits: InputLimits = DEFAULT_LIMITS, sensor: SensorInfo | None = None,
               min_size: tuple[int, int] | None = None) -> Frame:
    """A :class:`Frame` from a sensor message (rclpy or rosbags), with the decoding time. ``stamp_ns`` defaults to
    the message's header stamp; ``sensor`` rides along with the frame to the embedding step; ``min_size`` (width,
    height; the camera encoder's input, :attr:`FrameEmbedder.decode_size`) lets a JPEG be decoded directly at a
    fraction of its size (:func:`jpeg_reduction`; the frame's ``reduction`` says which)."""
    t0 = time.perf_counter()
    reduction = jpeg_reduction(msg, min_size) if modality is Modality.CAMERA and compressed else 1
    data = decode_sensor(modality, msg, compressed=compressed, radar_fields=radar_fields, limits=limits,
                         reduction=reduction)
    stamp = header_stamp_ns(msg) if stamp_ns is None else int(stamp_ns)
    return Frame(modality, topic, str(msg.header.frame_id), stamp, data, receive_ns,
                 (time.perf_counter() - t0) * 1e3, sensor, reduction)
