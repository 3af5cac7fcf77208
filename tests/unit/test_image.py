"""Image / CompressedImage wire formats <-> numpy (core, no ROS)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmr_fusion_ros.core.errors import ConversionError
from cmr_fusion_ros.core.image import (
    ENCODINGS,
    ImageWire,
    convert_color,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)

LISTED = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1"]


def random_image(encoding: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    base, ch = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w, ch) if ch > 1 else (h, w)
    if base.kind == "f":
        return rng.normal(size=shape).astype(base)
    info = np.iinfo(base)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=base)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("bigendian", [False, True])
def test_round_trip_every_encoding(encoding, bigendian):
    img = random_image(encoding, 7, 5)
    wire = encode_image(img, encoding, is_bigendian=bigendian)
    assert wire.step == 5 * img.itemsize * (img.shape[2] if img.ndim == 3 else 1)
    back = decode_image(wire)
    assert back.dtype == img.dtype and back.shape == img.shape
    np.testing.assert_array_equal(back, img)


@settings(max_examples=80, deadline=None)
@given(encoding=st.sampled_from(LISTED), h=st.integers(1, 9), w=st.integers(1, 9), pad=st.integers(1, 13),
       bigendian=st.booleans(), seed=st.integers(0, 2**31))
def test_row_padding_and_byte_order(encoding, h, w, pad, bigendian, seed):
    img = random_image(encoding, h, w, seed)
    wire = encode_image(img, encoding, is_bigendian=bigendian)
    rows = np.frombuffer(wire.data, np.uint8).reshape(h, wire.step)
    padded = np.concatenate([rows, np.full((h, pad), 0x5A, np.uint8)], axis=1)
    msg = replace(wire, step=wire.step + pad, data=padded.tobytes())
    np.testing.assert_array_equal(decode_image(msg), img)


def test_big_endian_mono16_bytes():
    wire = encode_image(np.array([[0x0102]], np.uint16), "mono16", is_bigendian=True)
    assert wire.data == b"\x01\x02"
    assert decode_image(wire)[0, 0] == 0x0102


@pytest.mark.parametrize(
    "over, pattern",
    [
        (dict(encoding="yuv422_weird"), r"Image\.encoding: unknown encoding 'yuv422_weird'"),
        (dict(step=5), r"Image\.step: step 5 < width 2 x 3 channel\(s\) x 1 byte\(s\) = 6"),
        (dict(data=bytes(11)), r"Image\.data: length 11 != step 6 x height 2 = 12"),
        (dict(height=3), r"Image\.data: length 12 != step 6 x height 3 = 18"),
    ],
)
def test_malformed_images_raise_named_errors(over, pattern):
    wire = ImageWire(height=2, width=2, encoding="rgb8", is_bigendian=False, step=6, data=bytes(12))
    with pytest.raises(ConversionError, match=pattern):
        decode_image(replace(wire, **over))


def test_encode_checks_channels_and_dtype():
    with pytest.raises(ConversionError, match=r"'rgb8' needs 3 channel\(s\), the array has 1"):
        encode_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ConversionError, match=r"'32FC1' needs dtype float32, the array has float64"):
        encode_image(np.zeros((2, 2)), "32FC1")


def test_png_is_lossless_for_colour_and_16_bit():
    for enc in ("rgb8", "bgr8", "rgba8", "mono8"):
        img = random_image(enc, 16, 12)
        fmt, data = encode_compressed(img, enc, "png")
        assert "png" in fmt
        np.testing.assert_array_equal(decode_compressed((fmt, data), enc), img)
    depth = random_image("16UC1", 8, 8)
    fmt, data = encode_compressed(depth, "16UC1", "png")
    np.testing.assert_array_equal(decode_compressed((fmt, data), "passthrough"), depth)


def test_jpeg_is_close_and_colour_order_respected():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 220  # red in rgb8
    fmt, data = encode_compressed(img, "rgb8", "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8" and data[:3] == b"\xff\xd8\xff"
    rgb = decode_compressed((fmt, data), "rgb8")
    assert abs(int(rgb[..., 0].mean()) - 220) <= 3 and rgb[..., 2].mean() < 5
    bgr = decode_compressed((fmt, data), "bgr8")
    assert bgr[..., 2].mean() > 200


@pytest.mark.parametrize(
    "fmt, data, pattern",
    [
        ("tiff", b"II*\x00abcd", r"CompressedImage\.format: unsupported format 'tiff'"),
        ("jpeg", b"not a jpeg at all", r"CompressedImage\.data: format says 'jpeg' but the data starts with"),
        ("jpeg", b"\xff\xd8\xff\xe0" + bytes(20), r"CompressedImage\.data: jpeg data of 24 bytes could not be decoded"),
        ("png", b"", r"CompressedImage\.data: empty"),
    ],
)
def test_malformed_compressed_raise_named_errors(fmt, data, pattern):
    with pytest.raises(ConversionError, match=pattern):
        decode_compressed((fmt, data))


def test_convert_color_unknown():
    with pytest.raises(ConversionError, match=r"no colour conversion 'mono16' -> 'rgb8'"):
        convert_color(np.zeros((2, 2), np.uint16), "mono16", "rgb8")


def test_jpeg_decoded_directly_at_a_fraction_no_smaller_than_the_encoder_input():
    from types import SimpleNamespace

    import cv2

    from cmr_fusion_ros.core.decode import decode_sensor, frame_from, jpeg_reduction
    from cmr_fusion_ros.core.types import Modality

    rng = np.random.default_rng(3)
    img = cv2.resize(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), (1280, 720), interpolation=cv2.INTER_LINEAR)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="cam")
    jpg = SimpleNamespace(header=header, **dict(zip(("format", "data"), encode_compressed(img, "rgb8", "jpeg"))))
    png = SimpleNamespace(header=header, **dict(zip(("format", "data"), encode_compressed(img, "rgb8", "png"))))
    assert jpeg_reduction(jpg, (96, 72)) == 8  # 160 x 90 is still >= 96 x 72
    assert jpeg_reduction(jpg, (200, 100)) == 4 and jpeg_reduction(jpg, (641, 10)) == 1
    assert jpeg_reduction(png, (96, 72)) == 1 and jpeg_reduction(jpg, None) == 1
    small = decode_sensor(Modality.CAMERA, jpg, compressed=True, reduction=8)
    whole = decode_sensor(Modality.CAMERA, jpg, compressed=True)
    assert small.shape == (90, 160, 3) and whole.shape == (720, 1280, 3)
    # the same picture: the reduced decode is close to an area-averaged full decode
    area = cv2.resize(whole, (160, 90), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - area.astype(int)).mean() < 4.0
    frame = frame_from(Modality.CAMERA, "/cam", jpg, compressed=True, min_size=(96, 72))
    assert frame.reduction == 8 and frame.data.shape == (90, 160, 3) and frame.stamp_ns == 1_000_000_000
