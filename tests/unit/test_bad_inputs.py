"""Malformed sensor messages (property-based): rejected with a ConversionError naming the field, never another error;
valid frames in harmless disguises (byte order, field types, padding, NaN/Inf points) decode to the same content."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.decode import InputLimits, compressed_dims, decode_sensor
from cmr_fusion_ros.core.preprocess import default_preprocessing
from cmr_fusion_ros.core.types import Modality

from tests.unit import stress_messages as sm

C, L, R = Modality.CAMERA, Modality.LIDAR, Modality.RADAR
CASES = [(C, False), (C, True), (L, False), (R, False)]
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _embed_input(modality, data):
    """The decoded data goes through the real preprocessing: a tensor with only finite values."""
    tensor = default_preprocessing(modality)(data)
    assert np.isfinite(tensor).all()
    return tensor


@pytest.mark.parametrize("modality,compressed", CASES, ids=["image", "compressed", "lidar", "radar"])
@FUZZ
@given(data=st.data())
def test_malformed_messages_are_rejected_naming_the_field(modality, compressed, data):
    reason, msg = data.draw(sm.malformed(modality, compressed), label="malformed")
    with pytest.raises(ConversionError) as info:
        decode_sensor(modality, msg, compressed=compressed)
    err = info.value
    assert err.field and err.field in str(err) and err.msg_type.startswith("sensor_msgs/"), (reason, str(err))


@pytest.mark.parametrize("modality,compressed", CASES, ids=["image", "compressed", "lidar", "radar"])
@FUZZ
@given(data=st.data(), place=st.integers(0, 20))
def test_disguised_valid_frames_decode_to_the_same_content(modality, compressed, data, place):
    disguise, msg = data.draw(sm.valid(modality, place, compressed), label="valid")
    out = decode_sensor(modality, msg, compressed=compressed)
    if modality is C:
        assert out.shape == (sm.IMAGE_SIDE, sm.IMAGE_SIDE, 3) and out.dtype == np.uint8
        assert abs(float(out.mean()) - 10 * place) <= (3 if "jpeg" in disguise else 0), disguise
    else:
        n = sm.RADAR_POINTS if modality is R else sm.CLOUD_POINTS
        assert out.reshape(-1).shape[0] == n, disguise  # the NaN/Inf points are gone, the others kept
        assert sm.expected_place(out) == place
    _embed_input(modality, out)


@FUZZ
@given(item=sm.maybe_bad_compressed())
def test_damaged_jpeg_png_is_rejected_or_decodes_to_an_image(item):
    _, msg = item
    try:
        out = decode_sensor(C, msg, compressed=True)
    except ConversionError as err:
        assert err.field in ("data", "format")
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    _embed_input(C, out)


def test_limits_are_configurable_and_checked_before_decoding():
    cloud = sm.cloud_of(L, 3)
    assert decode_sensor(L, cloud, compressed=False).shape[0] == sm.CLOUD_POINTS
    with pytest.raises(ConversionError, match=r"PointCloud2\.height/width: 40x1 = 40 points; allowed 0\.\.10"):
        decode_sensor(L, cloud, compressed=False, limits=InputLimits(max_points=10))
    with pytest.raises(ConversionError, match=r"Image\.height/width: 8x8 = 64 pixels > limit 63"):
        decode_sensor(C, sm.image_of(1), compressed=False, limits=InputLimits(max_image_pixels=63))
    with pytest.raises(ConversionError, match=r"CompressedImage\.data: header declares 8x8 = 64 pixels"):
        decode_sensor(C, sm.compressed_of(1, "jpeg"), compressed=True, limits=InputLimits(max_image_pixels=63))
    with pytest.raises(ConversionError, match=r"CompressedImage\.data: .* bytes > limit 10"):
        decode_sensor(C, sm.compressed_of(1, "png"), compressed=True, limits=InputLimits(max_message_bytes=10))
    with pytest.raises(ConfigError, match="limits.max_points"):
        InputLimits(max_points=0)


def test_header_dims_of_real_jpeg_and_png(real_data):
    jpg = (real_data / "pjlab-sensorscalib" / "camera_0.jpg").read_bytes()
    import cv2

    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert compressed_dims(jpg[:65536]) == (img.shape[1], img.shape[0])
    assert compressed_dims(sm.compressed_of(2, "png").data) == (sm.IMAGE_SIDE, sm.IMAGE_SIDE)
    assert compressed_dims(b"\xff\xd8\xff\xe0\x00") is None


def test_huge_compressed_header_is_rejected_without_allocating():
    msg = sm.CompressedMsg("png", sm._png_header(100_000, 100_000) + bytes(32))
    with pytest.raises(ConversionError, match="100000x100000 = 10000000000 pixels > limit"):
        decode_sensor(C, msg, compressed=True)


def test_cloud_without_finite_points_names_the_fields():
    pts = sm._cloud_array(L, 1, "f4", 0)
    pts["z"] = np.inf
    from cmr_fusion_ros.core.pointcloud import encode_cloud

    wire = encode_cloud(pts)
    msg = sm.CloudMsg(wire.height, wire.width, list(wire.fields), False, wire.point_step, wire.row_step, wire.data)
    with pytest.raises(ConversionError, match=r"PointCloud2\.data: no lidar point with finite x, y, z"):
        decode_sensor(L, msg, compressed=False)
