"""sensor_msgs/Image and CompressedImage wire formats <-> numpy, in pure numpy/OpenCV (no ROS).

Works on any object with the Image attributes (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
``data``) or the CompressedImage ones (``format``, ``data``): rclpy messages, rosbags messages and the wire
dataclasses here. Row padding (``step`` > width x pixel size) and big-endian data are handled with one numpy view
and at most one copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cmr_fusion_ros.core.errors import ConversionError

__all__ = [
    "ENCODINGS",
    "ImageWire",
    "decode_image",
    "encode_image",
    "decode_compressed",
    "encode_compressed",
    "convert_color",
]

IMG = "sensor_msgs/Image"
CIMG = "sensor_msgs/CompressedImage"

# encoding -> (numpy base dtype, channels). Names as in sensor_msgs/image_encodings.hpp.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype("u1"), 3),
    "bgr8": (np.dtype("u1"), 3),
    "rgba8": (np.dtype("u1"), 4),
    "bgra8": (np.dtype("u1"), 4),
    "mono8": (np.dtype("u1"), 1),
    "mono16": (np.dtype("u2"), 1),
    "rgb16": (np.dtype("u2"), 3),
    "bgr16": (np.dtype("u2"), 3),
    "8UC1": (np.dtype("u1"), 1),
    "8UC3": (np.dtype("u1"), 3),
    "8UC4": (np.dtype("u1"), 4),
    "16UC1": (np.dtype("u2"), 1),
    "16SC1": (np.dtype("i2"), 1),
    "32SC1": (np.dtype("i4"), 1),
    "32FC1": (np.dtype("f4"), 1),
    "64FC1": (np.dtype("f8"), 1),
}

# colour layouts for convert_color / decode_compressed
_COLOR_LAYOUT = {"rgb8": "RGB", "bgr8": "BGR", "rgba8": "RGBA", "bgra8": "BGRA", "mono8": "GRAY"}
_CV_CODES = {
    ("BGR", "RGB"): cv2.COLOR_BGR2RGB,
    ("RGB", "BGR"): cv2.COLOR_RGB2BGR,
    ("BGRA", "RGB"): cv2.COLOR_BGRA2RGB,
    ("BGRA", "BGR"): cv2.COLOR_BGRA2BGR,
    ("RGBA", "RGB"): cv2.COLOR_RGBA2RGB,
    ("RGBA", "BGR"): cv2.COLOR_RGBA2BGR,
    ("BGR", "RGBA"): cv2.COLOR_BGR2RGBA,
    ("BGR", "BGRA"): cv2.COLOR_BGR2BGRA,
    ("RGB", "RGBA"): cv2.COLOR_RGB2RGBA,
    ("RGB", "BGRA"): cv2.COLOR_RGB2BGRA,
    ("RGBA", "BGRA"): cv2.COLOR_RGBA2BGRA,
    ("BGRA", "RGBA"): cv2.COLOR_BGRA2RGBA,
    ("GRAY", "RGB"): cv2.COLOR_GRAY2RGB,
    ("GRAY", "BGR"): cv2.COLOR_GRAY2BGR,
    ("GRAY", "RGBA"): cv2.COLOR_GRAY2RGBA,
    ("GRAY", "BGRA"): cv2.COLOR_GRAY2BGRA,
    ("RGB", "GRAY"): cv2.COLOR_RGB2GRAY,
    ("BGR", "GRAY"): cv2.COLOR_BGR2GRAY,
    ("RGBA", "GRAY"): cv2.COLOR_RGBA2GRAY,
    ("BGRA", "GRAY"): cv2.COLOR_BGRA2GRAY,
}


@dataclass(frozen=True, slots=True)
class ImageWire:
    """The sensor_msgs/Image fields (less the header) of an encoded image."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


def _byte_view(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(memoryview(data).cast("B") if memoryview(data).format != "B" else data, dtype=np.uint8)


def _layout(encoding: str) -> tuple[np.dtype, int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(IMG, "encoding", f"unknown encoding {encoding!r}; supported: {sorted(ENCODINGS)}") from None


def decode_image(msg: Any) -> np.ndarray:
    """Decode an Image-like object to ``(H, W)`` (one channel) or ``(H, W, C)``, native byte order.

    Raises :class:`ConversionError` for an unknown encoding, a ``step`` smaller than a row, or a data length other
    than ``step * height``. A little-endian image without row padding is a zero-copy (read-only) view.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = str(msg.encoding)
    base, channels = _layout(encoding)
    row_bytes = width * channels * base.itemsize
    if step < row_bytes:
        raise ConversionError(IMG, "step", f"step {step} < width {width} x {channels} channel(s) x {base.itemsize} byte(s) = {row_bytes}")
    raw = _byte_view(msg.data)
    if raw.size != step * height:
        raise ConversionError(IMG, "data", f"length {raw.size} != step {step} x height {height} = {step * height}")
    dtype = base.newbyteorder(">" if msg.is_bigendian else "<")
    rows = raw.reshape(height, step)
    if step != row_bytes:
        rows = np.ascontiguousarray(rows[:, :row_bytes])
    img = rows.view(dtype).reshape((height, width, channels) if channels > 1 else (height, width))
    if not img.dtype.isnative:
        img = img.astype(dtype.newbyteorder("="))
    return img


def encode_image(image: np.ndarray, encoding: str, *, is_bigendian: bool = False) -> ImageWire:
    """Encode ``(H, W)`` / ``(H, W, C)`` into Image fields; the array's dtype and channels must fit ``encoding``."""
    base, channels = _layout(encoding)
    arr = np.asarray(image)
    if arr.ndim == 2:
        have = 1
    elif arr.ndim == 3:
        have = arr.shape[2]
    else:
        raise ConversionError(IMG, "data", f"image must be (H, W) or (H, W, C), got shape {arr.shape}")
    if have != channels:
        raise ConversionError(IMG, "encoding", f"{encoding!r} needs {channels} channel(s), the array has {have} (shape {arr.shape})")
    if arr.dtype.newbyteorder("=") != base.newbyteorder("="):
        raise ConversionError(IMG, "encoding", f"{encoding!r} needs dtype {base}, the array has {arr.dtype}")
    height, width = arr.shape[:2]
    wire = np.ascontiguousarray(arr.astype(base.newbyteorder(">" if is_bigendian else "<"), copy=False))
    return ImageWire(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=bool(is_bigendian),
        step=int(width * channels * base.itemsize),
        data=wire.tobytes(),
    )


def convert_color(image: np.ndarray, source: str, target: str) -> np.ndarray:
    """Convert between the 8-bit colour encodings (rgb8, bgr8, rgba8, bgra8, mono8)."""
    if source == target:
        return image
    try:
        src, dst = _COLOR_LAYOUT[source], _COLOR_LAYOUT[target]
    except KeyError as err:
        raise ConversionError(IMG, "encoding", f"no colour conversion {source!r} -> {target!r}; supported: {sorted(_COLOR_LAYOUT)}") from err
    return cv2.cvtColor(np.ascontiguousarray(image), _CV_CODES[(src, dst)])


def _compressed_kind(fmt: str, data: np.ndarray) -> str:
    """'jpeg' or 'png', from the magic bytes first, then the format string (image_transport style allowed)."""
    head = bytes(data[:8])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    f = fmt.lower()
    if "jpeg" in f or "jpg" in f or "png" in f:
        raise ConversionError(CIMG, "data", f"format says {fmt!r} but the data starts with {head!r}, not a JPEG/PNG header")
    raise ConversionError(CIMG, "format", f"unsupported format {fmt!r}; supported: jpeg, png")


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_compressed(msg: Any, desired_encoding: str = "rgb8", *, reduction: int = 1) -> np.ndarray:
    """Decode a CompressedImage-like object (or a ``(format, data)`` pair) with OpenCV.

    ``desired_encoding`` is one of rgb8, bgr8, rgba8, bgra8, mono8, or ``"passthrough"`` (OpenCV's own result,
    e.g. 16-bit PNG depth images stay uint16). ``reduction`` 2, 4 or 8 decodes a JPEG directly at that fraction of
    its size (libjpeg's DCT scaling: much cheaper than decoding it whole; colour results only); other formats ignore
    it.
    """
    fmt, data = (msg if isinstance(msg, tuple) else (msg.format, msg.data))
    buf = _byte_view(data)
    if buf.size == 0:
        raise ConversionError(CIMG, "data", "empty")
    kind = _compressed_kind(str(fmt), buf)
    if reduction not in (1, *_REDUCED):
        raise ValueError(f"reduction {reduction!r}: 1, 2, 4 or 8")
    reduced = reduction > 1 and kind == "jpeg" and desired_encoding in ("rgb8", "bgr8")
    img = cv2.imdecode(buf, _REDUCED[reduction] if reduced else cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ConversionError(CIMG, "data", f"{kind} data of {buf.size} bytes could not be decoded (truncated or corrupt)")
    if desired_encoding == "passthrough":
        return img
    if img.dtype != np.uint8:
        raise ConversionError(CIMG, "data", f"decoded {img.dtype} image; use desired_encoding='passthrough'")
    source = "mono8" if img.ndim == 2 else {3: "bgr8", 4: "bgra8"}[img.shape[2]]
    return convert_color(img, source, desired_encoding)


def encode_compressed(image: np.ndarray, encoding: str, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Compress an image with OpenCV; returns ``(format string, bytes)`` for a CompressedImage.

    The format string follows image_transport: ``"<encoding>; jpeg compressed bgr8"`` / ``"...; png compressed ..."``.
    """
    kind = fmt.lower()
    if kind in ("jpg", "jpeg"):
        kind, ext, params = "jpeg", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif kind == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        raise ConversionError(CIMG, "format", f"unsupported format {fmt!r}; supported: jpeg, png")
    arr = np.asarray(image)
    if encoding in ("mono8", "8UC1", "mono16", "16UC1"):
        cv_img, cv_enc = arr, encoding
    else:
        source = {"8UC3": "bgr8", "8UC4": "bgra8"}.get(encoding, encoding)
        keep_alpha = kind == "png" and source in ("rgba8", "bgra8")
        cv_enc = "bgra8" if keep_alpha else "bgr8"
        cv_img = convert_color(arr, source, cv_enc)
    ok, out = cv2.imencode(ext, cv_img, params)
    if not ok:
        raise ConversionError(CIMG, "data", f"OpenCV could not {kind}-encode an image of shape {arr.shape}, {arr.dtype}")
    return f"{encoding}; {kind} compressed {cv_enc}", out.tobytes()
