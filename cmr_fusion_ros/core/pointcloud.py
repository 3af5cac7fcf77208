"""PointCloud2 wire format <-> numpy structured arrays, in pure numpy (no ROS).

Works on any object with the PointCloud2 attributes (``height``, ``width``, ``fields``, ``is_bigendian``,
``point_step``, ``row_step``, ``data``): rclpy messages, rosbags messages and :class:`CloudWire` alike, so the ROS
adapters, the bag tools and the simulator share one tested implementation.

Every field layout is supported: arbitrary offsets, the eight datatypes INT8..FLOAT64, padding inside a point
(``point_step``) and at the end of a row (``row_step``), big-endian data, organised clouds (``height > 1``) and
fields with ``count > 1`` (decoded as sub-arrays). Conversion is one ``np.frombuffer`` view plus at most one copy:
no Python loop per point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import ConversionError

__all__ = [
    "CloudWire",
    "PointField",
    "INT8",
    "UINT8",
    "INT16",
    "UINT16",
    "INT32",
    "UINT32",
    "FLOAT32",
    "FLOAT64",
    "cloud_dtype",
    "decode_cloud",
    "encode_cloud",
    "xyz",
    "structured",
]

MSG = "sensor_msgs/PointCloud2"

INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

# PointField datatype -> numpy base type (native-order kind; byte order applied per message)
_DATATYPE_TO_NUMPY: dict[int, np.dtype] = {
    INT8: np.dtype("i1"),
    UINT8: np.dtype("u1"),
    INT16: np.dtype("i2"),
    UINT16: np.dtype("u2"),
    INT32: np.dtype("i4"),
    UINT32: np.dtype("u4"),
    FLOAT32: np.dtype("f4"),
    FLOAT64: np.dtype("f8"),
}
_NUMPY_TO_DATATYPE: dict[str, int] = {dt.str[1:]: code for code, dt in _DATATYPE_TO_NUMPY.items()}


@dataclass(frozen=True, slots=True)
class PointField:
    """One field of a point: the same four values as ``sensor_msgs/PointField``."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class CloudWire:
    """The PointCloud2 fields (less the header) of an encoded cloud."""

    height: int
    width: int
    fields: tuple[PointField, ...]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: bytes
    is_dense: bool


def cloud_dtype(fields: Iterable[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """The numpy structured dtype for a PointCloud2 field layout, validating it.

    Raises :class:`ConversionError` naming the field for: an empty or duplicate name, an unknown datatype, a count
    below 1, a field that ends beyond ``point_step`` or overlaps another field, a ``point_step`` below 1.
    """
    if int(point_step) < 1:
        raise ConversionError(MSG, "point_step", f"must be >= 1, got {point_step}")
    order = ">" if is_bigendian else "<"
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for f in fields:
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), int(f.count)
        where = f"fields[{name!r}]"
        if not name:
            raise ConversionError(MSG, "fields[].name", "a field has an empty name")
        if name in names:
            raise ConversionError(MSG, where, "duplicate field name")
        if datatype not in _DATATYPE_TO_NUMPY:
            raise ConversionError(MSG, f"{where}.datatype", f"unknown datatype {datatype}; allowed 1 (INT8) .. 8 (FLOAT64)")
        if count < 1:
            raise ConversionError(MSG, f"{where}.count", f"count {count} unsupported; must be >= 1")
        if offset < 0:
            raise ConversionError(MSG, f"{where}.offset", f"negative offset {offset}")
        base = _DATATYPE_TO_NUMPY[datatype].newbyteorder(order)
        end = offset + base.itemsize * count
        if end > point_step:
            raise ConversionError(
                MSG,
                f"{where}.offset",
                f"field ends at byte {end} (offset {offset} + {base.itemsize} x count {count}), "
                f"beyond point_step {point_step}",
            )
        for lo, hi, other in spans:
            if offset < hi and lo < end:
                raise ConversionError(MSG, f"{where}.offset", f"bytes {offset}..{end} overlap field {other!r} ({lo}..{hi})")
        spans.append((offset, end, name))
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
    if not names:
        raise ConversionError(MSG, "fields", "no fields")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def _as_bytes_view(data: Any) -> memoryview:
    """A zero-copy byte view of ``data`` (bytes, bytearray, array.array('B'), numpy uint8 array, list)."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).view(np.uint8).reshape(-1))
    if isinstance(data, (list, tuple)):
        return memoryview(np.asarray(data, dtype=np.uint8))
    view = memoryview(data)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _native(arr: np.ndarray) -> np.ndarray:
    """Same values in native byte order (a copy only when some field is big-endian)."""
    dt = arr.dtype
    if all(dt.fields[n][0].base.isnative for n in dt.names):
        return arr
    native = np.dtype(
        {
            "names": list(dt.names),
            "formats": [dt.fields[n][0].newbyteorder("=") for n in dt.names],
            "offsets": [dt.fields[n][1] for n in dt.names],
            "itemsize": dt.itemsize,
        }
    )
    return arr.astype(native)


def decode_cloud(msg: Any, *, skip_nans: bool = False, organized: bool | None = None) -> np.ndarray:
    """Decode a PointCloud2-like object into a numpy structured array with native byte order.

    Returns shape ``(height, width)`` for an organised cloud (``height > 1``) unless ``organized=False`` or
    ``skip_nans``; else ``(height * width,)``. With ``skip_nans``, points whose x, y or z is NaN are dropped (when the
    cloud has no x/y/z, points with a NaN in any floating field are dropped). Padding bytes are kept in the dtype's
    itemsize (``point_step``) so the result re-encodes to the same layout. Little-endian data without row padding is
    returned as a zero-copy (possibly read-only) view of the message buffer (with ``skip_nans`` too when no point is
    dropped).
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    dtype = cloud_dtype(msg.fields, point_step, bool(msg.is_bigendian))
    if height < 0 or width < 0:
        raise ConversionError(MSG, "height/width", f"negative size {height}x{width}")
    if row_step < width * point_step:
        raise ConversionError(
            MSG, "row_step", f"row_step {row_step} < width {width} x point_step {point_step} = {width * point_step}"
        )
    raw = _as_bytes_view(msg.data)
    if len(raw) != row_step * height:
        raise ConversionError(
            MSG, "data", f"length {len(raw)} != row_step {row_step} x height {height} = {row_step * height}"
        )
    buf = np.frombuffer(raw, dtype=np.uint8)
    if row_step == width * point_step:
        points = buf.view(dtype).reshape(height, width) if height * width else np.zeros((height, width), dtype)
    else:  # padding at the end of each row: drop it (one copy)
        rows = buf.reshape(height, row_step)[:, : width * point_step]
        points = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    points = _native(points)
    if skip_nans:
        flat = points.reshape(-1)
        keys = [k for k in ("x", "y", "z") if k in dtype.names]
        if not keys:
            keys = [n for n in dtype.names if dtype.fields[n][0].base.kind == "f"]
        if keys:
            bad = np.zeros(flat.shape[0], dtype=bool)
            for k in keys:
                col = flat[k]
                nan = np.isnan(col)
                bad |= nan.reshape(nan.shape[0], -1).any(axis=1) if nan.ndim > 1 else nan
            if bad.any():  # a copy only when some point goes (a 100k-point scan: ~1 ms)
                flat = flat[~bad]
        return flat
    if organized is None:
        organized = height > 1
    if organized:
        return points
    return points.reshape(-1)


def encode_cloud(points: np.ndarray, *, is_bigendian: bool = False, is_dense: bool | None = None) -> CloudWire:
    """Encode a structured array ``(N,)`` (unorganised) or ``(H, W)`` (organised) into PointCloud2 fields.

    The dtype's field offsets and itemsize become the PointFields and ``point_step`` (so padding is preserved); the
    data is written in the requested byte order. ``is_dense`` defaults to "no NaN in x/y/z".
    """
    if not isinstance(points, np.ndarray) or points.dtype.names is None:
        raise ConversionError(MSG, "data", "expected a numpy structured array with named fields")
    if points.ndim == 1:
        height, width = 1, points.shape[0]
    elif points.ndim == 2:
        height, width = points.shape
    else:
        raise ConversionError(MSG, "height/width", f"array must be 1-D or 2-D, got shape {points.shape}")
    dt = points.dtype
    order = ">" if is_bigendian else "<"
    fields: list[PointField] = []
    formats = []
    for name in dt.names:
        ftype, offset = dt.fields[name][0], dt.fields[name][1]
        base = ftype.base
        count = int(np.prod(ftype.shape)) if ftype.shape else 1
        code = _NUMPY_TO_DATATYPE.get(base.newbyteorder("<").str[1:])
        if code is None:
            raise ConversionError(MSG, f"fields[{name!r}].datatype", f"numpy type {base} has no PointField datatype")
        fields.append(PointField(name, int(offset), code, count))
        formats.append(base.newbyteorder(order) if count == 1 else (base.newbyteorder(order), ftype.shape))
    wire_dtype = np.dtype({"names": list(dt.names), "formats": formats, "offsets": [f.offset for f in fields], "itemsize": dt.itemsize})
    data = np.ascontiguousarray(points.astype(wire_dtype, copy=False)).reshape(-1)
    if is_dense is None:
        is_dense = True
        for k in ("x", "y", "z"):
            if k in dt.names and dt.fields[k][0].base.kind == "f" and np.isnan(points[k]).any():
                is_dense = False
                break
    return CloudWire(
        height=int(height),
        width=int(width),
        fields=tuple(fields),
        is_bigendian=bool(is_bigendian),
        point_step=int(dt.itemsize),
        row_step=int(dt.itemsize) * int(width),
        data=data.tobytes(),
        is_dense=bool(is_dense),
    )


def structured(columns: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Build a packed structured array from named 1-D columns (each column keeps its dtype)."""
    items = list(columns.items()) if isinstance(columns, Mapping) else list(columns)
    if not items:
        raise ConversionError(MSG, "fields", "no columns")
    n = len(items[0][1])
    dtype = np.dtype([(name, np.asarray(col).dtype) for name, col in items])
    out = np.empty(n, dtype=dtype)
    for name, col in items:
        if len(col) != n:
            raise ConversionError(MSG, f"fields[{name!r}]", f"column length {len(col)} != {n}")
        out[name] = col
    return out


def xyz(points: np.ndarray, names: tuple[str, str, str] = ("x", "y", "z")) -> np.ndarray:
    """``(N, 3)`` float32 coordinates from a structured cloud (any shape, flattened)."""
    missing = [n for n in names if points.dtype.names is None or n not in points.dtype.names]
    if missing:
        have = list(points.dtype.names or ())
        raise ConversionError(MSG, f"fields[{missing[0]!r}]", f"field missing; the cloud has {have}")
    flat = points.reshape(-1)
    out = np.empty((flat.shape[0], 3), dtype=np.float32)
    for i, n in enumerate(names):
        out[:, i] = flat[n]
    return out
