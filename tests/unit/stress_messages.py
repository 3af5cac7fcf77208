"""Hypothesis strategies of sensor messages for the fuzz tests: valid frames in harmless disguises, and malformed ones.

Messages are plain objects with the ``sensor_msgs`` attributes (the core decoders take any such object); the node
fuzz test copies them into rclpy messages (``to_ros``). Every valid frame carries a *place* number the stand-in
encoders read back (camera: pixel value ``10 * place``; LiDAR and radar: the mean ``x`` of the finite points), so a
test can tell that a disguised frame decoded to the same content.

``malformed(modality, compressed)`` draws ``(reason, message)`` where the message must be rejected with a
``ConversionError``; ``maybe_bad(...)`` adds damage a decoder may or may not notice (a truncated JPEG still decodes
to a grey-padded image): those must never raise anything but ``ConversionError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from hypothesis import strategies as st

from cmr_fusion_ros.core.pointcloud import encode_cloud
from cmr_fusion_ros.core.types import Modality

IMAGE_SIDE = 8
CLOUD_POINTS = 40
RADAR_POINTS = 12
U32 = 2**32 - 1


@dataclass
class Header:
    stamp_ns: int = 0
    frame_id: str = ""


@dataclass
class ImageMsg:
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes
    header: Header = field(default_factory=Header)


@dataclass
class CompressedMsg:
    format: str
    data: bytes
    header: Header = field(default_factory=Header)


@dataclass
class Field:
    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass
class CloudMsg:
    height: int
    width: int
    fields: list
    is_bigendian: bool
    point_step: int
    row_step: int
    data: bytes
    is_dense: bool = True
    header: Header = field(default_factory=Header)


# --- valid frames ---------------------------------------------------------------------------------------------------

def image_of(place: int, encoding: str = "rgb8", pad: int = 0) -> ImageMsg:
    channels = 4 if encoding in ("rgba8", "bgra8") else 3
    img = np.full((IMAGE_SIDE, IMAGE_SIDE, channels), 10 * place, np.uint8)
    if channels == 4:
        img[..., 3] = 255
    row = IMAGE_SIDE * channels
    rows = np.zeros((IMAGE_SIDE, row + pad), np.uint8)
    rows[:, :row] = img.reshape(IMAGE_SIDE, row)
    return ImageMsg(IMAGE_SIDE, IMAGE_SIDE, encoding, 0, row + pad, rows.tobytes())


def compressed_of(place: int, fmt: str = "png") -> CompressedMsg:
    img = np.full((IMAGE_SIDE, IMAGE_SIDE, 3), 10 * place, np.uint8)
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", img)
    assert ok
    return CompressedMsg(f"rgb8; {fmt} compressed bgr8", buf.tobytes())


def _cloud_array(modality: Modality, place: int, ftype: str, extra_bad: int) -> np.ndarray:
    names = ("x", "y", "z", "doppler", "rcs") if modality is Modality.RADAR else ("x", "y", "z", "intensity")
    n = RADAR_POINTS if modality is Modality.RADAR else CLOUD_POINTS
    pts = np.zeros(n + extra_bad, dtype=[(k, ftype) for k in names])
    pts["x"] = place
    pts["y"][:n] = np.linspace(-1, 1, n)
    for i in range(extra_bad):  # points with a NaN / Inf coordinate: dropped, the place is unchanged
        pts[("x", "y", "z")[i % 3]][n + i] = (np.nan, np.inf, -np.inf)[i % 3]
    return pts


def cloud_of(modality: Modality, place: int, *, ftype: str = "f4", bigendian: bool = False, extra_bad: int = 0,
             row_pad: int = 0, organized: bool = False) -> CloudMsg:
    pts = _cloud_array(modality, place, ftype, extra_bad)
    if organized and pts.shape[0] % 2 == 0:
        pts = pts.reshape(2, -1)
    wire = encode_cloud(pts, is_bigendian=bigendian)
    data, row_step = wire.data, wire.row_step
    if row_pad:
        rows = np.frombuffer(data, np.uint8).reshape(wire.height, wire.row_step)
        padded = np.zeros((wire.height, wire.row_step + row_pad), np.uint8)
        padded[:, :wire.row_step] = rows
        data, row_step = padded.tobytes(), wire.row_step + row_pad
    return CloudMsg(wire.height, wire.width, [Field(f.name, f.offset, f.datatype, f.count) for f in wire.fields],
                    wire.is_bigendian, wire.point_step, row_step, data, wire.is_dense)


def valid(modality: Modality, place: int, compressed: bool = False) -> st.SearchStrategy:
    """A valid frame of ``place`` in one of its harmless disguises: ``(disguise, message)``."""
    if modality is Modality.CAMERA:
        if compressed:
            return st.sampled_from(["png", "jpeg"]).map(lambda f: (f"{f}", compressed_of(place, f)))
        return st.tuples(st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8"]), st.sampled_from([0, 0, 3, 16]),
                         st.booleans()).map(lambda t: (f"{t[0]} pad {t[1]} be {t[2]}", _be(image_of(place, t[0], t[1]), t[2])))
    return st.tuples(st.sampled_from(["f4", "f4", "f8"]), st.booleans(), st.sampled_from([0, 0, 1, 3, 7]),
                     st.sampled_from([0, 0, 4]), st.booleans()).map(
        lambda t: (f"{t[0]} be {t[1]} nonfinite {t[2]} pad {t[3]} organised {t[4]}",
                   cloud_of(modality, place, ftype=t[0], bigendian=t[1], extra_bad=t[2], row_pad=t[3], organized=t[4])))


def _be(msg: ImageMsg, flag: bool) -> ImageMsg:
    msg.is_bigendian = int(flag)  # 8-bit encodings: byte order changes nothing
    return msg


# --- malformed frames -----------------------------------------------------------------------------------------------

@st.composite
def malformed_image(draw) -> tuple[str, ImageMsg]:
    msg = draw(valid(Modality.CAMERA, draw(st.integers(0, 20))))[1]
    kind = draw(st.sampled_from(["step", "truncated", "longer", "height", "width", "encoding", "not_colour", "empty",
                                 "huge"]))
    row = msg.width * (4 if msg.encoding in ("rgba8", "bgra8") else 3)
    if kind == "step":
        msg.step = draw(st.integers(0, row - 1))
    elif kind == "truncated":
        msg.data = msg.data[: draw(st.integers(0, len(msg.data) - 1))]
    elif kind == "longer":
        msg.data = msg.data + bytes(draw(st.integers(1, 64)))
    elif kind == "height":
        msg.height = draw(st.integers(0, 4 * IMAGE_SIDE).filter(lambda h: h != IMAGE_SIDE))
    elif kind == "width":  # wider than the step holds
        msg.width = draw(st.integers(msg.step // (row // msg.width) + 1, 100_000))
    elif kind == "encoding":
        msg.encoding = draw(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs",)),
                                    max_size=12).filter(lambda e: e not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")))
    elif kind == "not_colour":
        msg.encoding = draw(st.sampled_from(["mono16", "16UC1", "32FC1", "64FC1", "8UC3", "rgb16"]))
    elif kind == "empty":
        msg.height, msg.width, msg.step, msg.data = 0, 0, 0, b""
    else:  # a header claiming a giant image
        msg.height, msg.width = draw(st.integers(4097, 200_000)), draw(st.integers(4097, 200_000))
        msg.step = msg.width * 3
    return kind, msg


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@st.composite
def malformed_compressed(draw) -> tuple[str, CompressedMsg]:
    kind = draw(st.sampled_from(["empty", "garbage", "format", "bomb", "zero_dims"]))
    if kind == "empty":
        return kind, CompressedMsg("jpeg", b"")
    if kind == "garbage":
        body = draw(st.binary(min_size=1, max_size=300).filter(lambda b: not b.startswith((b"\xff\xd8", b"\x89PNG"))))
        return kind, CompressedMsg(draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8"])), body)
    if kind == "format":
        return kind, CompressedMsg(draw(st.sampled_from(["", "bmp", "tiff", "webp", "h264"])),
                                   draw(st.binary(min_size=1, max_size=64).filter(
                                       lambda b: not b.startswith((b"\xff\xd8", b"\x89PNG")))))
    if kind == "zero_dims":
        return kind, CompressedMsg("png", _png_header(0, draw(st.integers(0, 50))) + bytes(16))
    w, h = draw(st.integers(5000, 2**31 - 1)), draw(st.integers(5000, 2**31 - 1))
    return kind, CompressedMsg("png", _png_header(w, h) + bytes(draw(st.integers(0, 64))))


@st.composite
def maybe_bad_compressed(draw) -> tuple[str, CompressedMsg]:
    """Damage a decoder may or may not notice: a cut or bit-flipped JPEG/PNG."""
    msg = compressed_of(draw(st.integers(0, 20)), draw(st.sampled_from(["png", "jpeg"])))
    data = bytearray(msg.data)
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data) - 1))]
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return "damaged", CompressedMsg(msg.format, bytes(data))


@st.composite
def malformed_cloud(draw, modality: Modality) -> tuple[str, CloudMsg]:
    msg = draw(valid(modality, draw(st.integers(0, 20))))[1]
    kinds = ["point_step", "field_beyond", "duplicate", "datatype", "count", "row_step", "truncated", "longer",
             "millions", "all_nonfinite", "zero_points", "missing_x", "no_fields", "width"]
    if modality is Modality.RADAR:
        kinds.append("missing_doppler")
    kind = draw(st.sampled_from(kinds))
    if kind == "point_step":
        msg.point_step = draw(st.integers(0, 3))
        msg.row_step = msg.point_step * msg.width
        msg.data = bytes(msg.row_step * msg.height)
    elif kind == "field_beyond":
        i = draw(st.integers(0, len(msg.fields) - 1))
        msg.fields[i].offset = draw(st.integers(msg.point_step - 1, U32 // 2))
    elif kind == "duplicate":
        msg.fields.append(Field(msg.fields[0].name, msg.fields[0].offset, msg.fields[0].datatype, 1))
    elif kind == "datatype":
        msg.fields[draw(st.integers(0, len(msg.fields) - 1))].datatype = draw(st.sampled_from([0, *range(9, 256)]))
    elif kind == "count":
        msg.fields[draw(st.integers(0, len(msg.fields) - 1))].count = 0
    elif kind == "row_step":
        msg.row_step = draw(st.integers(0, msg.width * msg.point_step - 1))
    elif kind == "truncated":
        msg.data = msg.data[: draw(st.integers(0, len(msg.data) - 1))]
    elif kind == "longer":
        msg.data = msg.data + bytes(draw(st.integers(1, 64)))
    elif kind == "millions":  # the header claims far more points than any sensor (and than the data holds)
        msg.height, msg.width = 1, draw(st.integers(2_000_001, U32))
        msg.row_step = min(U32, msg.width * msg.point_step)
    elif kind == "all_nonfinite":
        pts = _cloud_array(modality, 1, "f4", 0)
        pts[draw(st.sampled_from(["x", "y", "z"]))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        wire = encode_cloud(pts)
        msg.height, msg.width, msg.point_step, msg.row_step, msg.data = (
            wire.height, wire.width, wire.point_step, wire.row_step, wire.data)
        msg.fields = [Field(f.name, f.offset, f.datatype, f.count) for f in wire.fields]
        msg.is_bigendian = False
    elif kind == "zero_points":
        msg.height, msg.width, msg.row_step, msg.data = draw(st.sampled_from([0, 1])), 0, 0, b""
    elif kind == "missing_x":
        msg.fields = [f for f in msg.fields if f.name != "x"]
    elif kind == "missing_doppler":
        msg.fields = [f for f in msg.fields if f.name != "doppler"]
    elif kind == "no_fields":
        msg.fields = []
    else:  # wider than row_step holds
        msg.width = draw(st.integers(msg.row_step // msg.point_step + 1, 10 * CLOUD_POINTS + 100))
    return kind, msg


def malformed(modality: Modality, compressed: bool = False) -> st.SearchStrategy:
    """``(reason, message)`` pairs that must be rejected with a ConversionError."""
    if modality is Modality.CAMERA:
        return malformed_compressed() if compressed else malformed_image()
    return malformed_cloud(modality)


def expected_place(data: Any) -> int:
    """What a stand-in encoder reads from decoded data (see the module docstring)."""
    if data.dtype.names:
        return int(round(float(np.asarray(data["x"], np.float64).mean())))
    return int(round(float(data.mean()) / 10))


def valid_plain(modality: Modality, place: int) -> Any:
    """The plain (undisguised) valid frame of ``place``."""
    if modality is Modality.CAMERA:
        return image_of(place)
    return cloud_of(modality, place)
