"""PointCloud2 wire format <-> numpy (core, no ROS): round trips over random layouts and every malformed case."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmr_fusion_ros.core.errors import ConversionError
from cmr_fusion_ros.core.pointcloud import (
    FLOAT32,
    FLOAT64,
    UINT8,
    CloudWire,
    PointField,
    cloud_dtype,
    decode_cloud,
    encode_cloud,
    structured,
    xyz,
)

BASES = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]


@st.composite
def layouts(draw):
    """A random field layout: types, gaps between fields, counts, trailing padding, names."""
    n_fields = draw(st.integers(1, 6))
    names = draw(st.lists(st.sampled_from(["x", "y", "z", "intensity", "ring", "t", "rcs", "doppler", "a", "b"]),
                          min_size=n_fields, max_size=n_fields, unique=True))
    offset = 0
    spec = []
    for name in names:
        base = np.dtype(draw(st.sampled_from(BASES)))
        offset += draw(st.integers(0, 5))  # gap (unaligned offsets are legal in PointCloud2)
        count = draw(st.sampled_from([1, 1, 1, 2, 3]))
        spec.append((name, base, offset, count))
        offset += base.itemsize * count
    itemsize = offset + draw(st.integers(0, 7))
    formats = [b if c == 1 else (b, (c,)) for _, b, _, c in spec]
    return np.dtype({"names": [s[0] for s in spec], "formats": formats, "offsets": [s[2] for s in spec],
                     "itemsize": max(itemsize, 1)})


def random_cloud(dtype: np.dtype, shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape).copy()
    for name in dtype.names:  # avoid NaN payloads so == works; keep random finite floats
        if dtype.fields[name][0].base.kind == "f":
            arr[name] = rng.normal(size=arr[name].shape).astype(dtype.fields[name][0].base)
    return arr


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert a.dtype.names == b.dtype.names
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert a.dtype.fields[name][1] == b.dtype.fields[name][1], f"offset of {name}"


@settings(max_examples=150, deadline=None)
@given(layout=layouts(), n=st.integers(0, 40), height=st.sampled_from([1, 1, 3]), bigendian=st.booleans(),
       seed=st.integers(0, 2**31))
def test_round_trip_random_layouts(layout, n, height, bigendian, seed):
    shape = (height, n) if height > 1 else (n,)
    cloud = random_cloud(layout, shape, seed)
    wire = encode_cloud(cloud, is_bigendian=bigendian)
    assert wire.point_step == layout.itemsize
    assert wire.row_step == layout.itemsize * n
    assert len(wire.data) == wire.row_step * wire.height
    back = decode_cloud(wire)
    assert back.dtype.isnative or all(back.dtype.fields[k][0].base.isnative for k in back.dtype.names)
    assert_same(cloud, back)


@settings(max_examples=60, deadline=None)
@given(layout=layouts(), n=st.integers(1, 20), pad=st.integers(1, 16), seed=st.integers(0, 2**31))
def test_row_step_padding_is_dropped(layout, n, pad, seed):
    height = 4
    cloud = random_cloud(layout, (height, n), seed)
    wire = encode_cloud(cloud)
    rows = np.frombuffer(wire.data, np.uint8).reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = CloudWire(height, n, wire.fields, False, wire.point_step, wire.row_step + pad, padded.tobytes(), True)
    assert_same(cloud, decode_cloud(msg))


def test_big_endian_bytes_are_really_big_endian():
    cloud = structured({"x": np.array([1.0], np.float32), "ring": np.array([258], np.uint16)})
    wire = encode_cloud(cloud, is_bigendian=True)
    assert wire.data == np.array([1.0], ">f4").tobytes() + b"\x01\x02"
    back = decode_cloud(wire)
    assert back["x"][0] == 1.0 and back["ring"][0] == 258


def test_organised_cloud_keeps_shape_and_can_be_flattened():
    cloud = structured({"x": np.arange(12, dtype=np.float32)}).reshape(3, 4)
    wire = encode_cloud(cloud)
    assert (wire.height, wire.width) == (3, 4)
    assert decode_cloud(wire).shape == (3, 4)
    assert decode_cloud(wire, organized=False).shape == (12,)


def test_nan_points_dropped_on_request_only():
    x = np.array([0.0, np.nan, 2.0, 3.0], np.float32)
    y = np.array([0.0, 1.0, np.nan, 3.0], np.float32)
    z = np.zeros(4, np.float32)
    cloud = structured({"x": x, "y": y, "z": z, "i": np.arange(4, dtype=np.uint8)})
    wire = encode_cloud(cloud)
    assert wire.is_dense is False
    assert decode_cloud(wire).shape == (4,)
    kept = decode_cloud(wire, skip_nans=True)
    assert kept["i"].tolist() == [0, 3]


def test_empty_cloud_with_nan_drop():
    wire = encode_cloud(np.zeros(0, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("v", "f4", (2,))]))
    assert decode_cloud(wire, skip_nans=True).shape == (0,)


def test_nan_drop_on_organised_cloud_flattens():
    x = np.array([[0.0, np.nan], [1.0, 2.0]], np.float32)
    cloud = np.zeros((2, 2), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    cloud["x"] = x
    assert decode_cloud(encode_cloud(cloud), skip_nans=True).shape == (3,)


def test_xyz_helper():
    cloud = structured({"x": np.array([1], np.float64), "y": np.array([2], np.float32), "z": np.array([3], np.int16)})
    np.testing.assert_array_equal(xyz(cloud), [[1, 2, 3]])
    with pytest.raises(ConversionError, match=r"fields\['z'\].*missing"):
        xyz(structured({"x": np.zeros(1), "y": np.zeros(1)}))


def _wire(**over):
    base = dict(height=1, width=2, fields=(PointField("x", 0, FLOAT32, 1), PointField("y", 4, FLOAT32, 1)),
                is_bigendian=False, point_step=8, row_step=16, data=bytes(16), is_dense=True)
    base.update(over)
    return CloudWire(**base)


@pytest.mark.parametrize(
    "over, pattern",
    [
        (dict(data=bytes(15)), r"PointCloud2\.data: length 15 != row_step 16 x height 1 = 16"),
        (dict(height=2), r"PointCloud2\.data: length 16 != row_step 16 x height 2 = 32"),
        (dict(row_step=12), r"PointCloud2\.row_step: row_step 12 < width 2 x point_step 8 = 16"),
        (dict(fields=(PointField("x", 0, FLOAT32), PointField("y", 6, FLOAT32))),
         r"fields\['y'\]\.offset: field ends at byte 10 .* beyond point_step 8"),
        (dict(fields=(PointField("x", 0, FLOAT64), PointField("y", 4, FLOAT32))),
         r"fields\['y'\]\.offset: bytes 4\.\.8 overlap field 'x' \(0\.\.8\)"),
        (dict(fields=(PointField("x", 0, 9),)), r"fields\['x'\]\.datatype: unknown datatype 9"),
        (dict(fields=(PointField("x", 0, 0),)), r"fields\['x'\]\.datatype: unknown datatype 0"),
        (dict(fields=(PointField("x", 0, FLOAT32, 0),)), r"fields\['x'\]\.count: count 0 unsupported"),
        (dict(fields=(PointField("x", 0, FLOAT32), PointField("x", 4, FLOAT32))), r"fields\['x'\]: duplicate"),
        (dict(fields=(PointField("x", 0, FLOAT32), PointField("y", 2, UINT8))), r"fields\['y'\]\.offset: bytes 2\.\.3 overlap field 'x'"),
        (dict(fields=()), r"PointCloud2\.fields: no fields"),
        (dict(point_step=0, row_step=0, data=b""), r"PointCloud2\.point_step: must be >= 1"),
    ],
)
def test_malformed_clouds_raise_named_errors(over, pattern):
    with pytest.raises(ConversionError, match=pattern):
        decode_cloud(_wire(**over))


def test_cloud_dtype_matches_layout():
    dt = cloud_dtype([PointField("a", 2, UINT8), PointField("b", 4, FLOAT64, 2)], 24, True)
    assert dt.itemsize == 24
    assert dt.fields["a"][1] == 2 and dt.fields["b"][1] == 4
    assert dt.fields["b"][0].shape == (2,) and dt.fields["b"][0].base.byteorder == ">"


def test_encode_rejects_non_structured_and_unsupported_types():
    with pytest.raises(ConversionError, match="structured array"):
        encode_cloud(np.zeros((3, 3), np.float32))
    with pytest.raises(ConversionError, match=r"fields\['c'\]\.datatype: numpy type complex64"):
        encode_cloud(np.zeros(2, dtype=[("c", "c8")]))
