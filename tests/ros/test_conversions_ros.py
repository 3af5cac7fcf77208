"""rclpy messages <-> numpy, through real CDR serialisation, for every listed format and the real samples."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from cmr_fusion_ros.core.errors import ConversionError
from cmr_fusion_ros.core.radar import RadarFields
from cmr_fusion_ros.core.sensor_files import read_dgp_npz, read_pcd, read_radar_csv
from cmr_fusion_ros.ros.conversions import (
    array_to_pointcloud2,
    compressed_to_numpy,
    image_to_numpy,
    make_header,
    numpy_to_compressed,
    numpy_to_image,
    ns_to_stamp,
    pointcloud2_to_array,
    pointcloud2_to_radar,
    stamp_to_ns,
)
from tests.unit.test_image import LISTED, random_image
from tests.unit.test_pointcloud import assert_same, layouts, random_cloud


def through_cdr(msg):
    return deserialize_message(serialize_message(msg), type(msg))


@pytest.mark.parametrize("encoding", LISTED)
@pytest.mark.parametrize("bigendian", [False, True])
def test_image_round_trip_through_cdr(encoding, bigendian):
    img = random_image(encoding, 9, 13, seed=3)
    msg = numpy_to_image(img, encoding, make_header(1_500_000_123, "cam"), is_bigendian=bigendian)
    assert isinstance(msg.data, array.array)
    back = through_cdr(msg)
    assert back.header.frame_id == "cam" and stamp_to_ns(back.header.stamp) == 1_500_000_123
    assert back.encoding == encoding and back.is_bigendian == int(bigendian)
    np.testing.assert_array_equal(image_to_numpy(back), img)


def test_image_with_row_padding_from_a_driver():
    img = random_image("mono16", 4, 3)
    rows = img.astype("<u2").view(np.uint8).reshape(4, 6)
    padded = np.concatenate([rows, np.zeros((4, 2), np.uint8)], axis=1)
    msg = Image(height=4, width=3, encoding="mono16", is_bigendian=0, step=8)
    msg.data = array.array("B", padded.tobytes())
    np.testing.assert_array_equal(image_to_numpy(through_cdr(msg)), img)


@settings(max_examples=40, deadline=None)
@given(layout=layouts(), n=st.integers(0, 30), height=st.sampled_from([1, 2]), bigendian=st.booleans(),
       seed=st.integers(0, 2**31))
def test_pointcloud2_round_trip_through_cdr(layout, n, height, bigendian, seed):
    cloud = random_cloud(layout, (height, n) if height > 1 else (n,), seed)
    msg = array_to_pointcloud2(cloud, make_header(7, "lidar"), is_bigendian=bigendian)
    back = through_cdr(msg)
    assert (back.height, back.width, back.point_step) == (height, n, layout.itemsize)
    assert_same(cloud, pointcloud2_to_array(back))


def test_malformed_pointcloud2_message():
    msg = array_to_pointcloud2(np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")]))
    msg.data = array.array("B", bytes(47))
    with pytest.raises(ConversionError, match=r"PointCloud2\.data: length 47 != row_step 48 x height 1 = 48"):
        pointcloud2_to_array(msg)
    msg = array_to_pointcloud2(np.zeros(4, dtype=[("x", "f4")]))
    msg.fields[0].datatype = 42
    with pytest.raises(ConversionError, match=r"fields\['x'\]\.datatype: unknown datatype 42"):
        pointcloud2_to_array(msg)


def test_malformed_image_message():
    msg = Image(height=2, width=2, encoding="rgb9", step=6)
    msg.data = array.array("B", bytes(12))
    with pytest.raises(ConversionError, match=r"Image\.encoding: unknown encoding 'rgb9'"):
        image_to_numpy(msg)


def test_stamp_conversion():
    assert stamp_to_ns(ns_to_stamp(1_604_546_789_520_803_072)) == 1_604_546_789_520_803_072


# --- the real samples: to messages and back without loss -------------------------------------------------------

def test_real_dgp_lidar_and_camera(real_data):
    scene = real_data / "tri-dgp" / "scene_01"
    cloud = read_dgp_npz(next(scene.glob("*.npz")))
    back = pointcloud2_to_array(through_cdr(array_to_pointcloud2(cloud, make_header(1, "LIDAR"))))
    assert_same(cloud, back)

    jpeg_path = next(scene.glob("*.jpg"))
    rgb = cv2.cvtColor(cv2.imread(str(jpeg_path)), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (1216, 1936, 3)
    np.testing.assert_array_equal(image_to_numpy(through_cdr(numpy_to_image(rgb, "rgb8"))), rgb)

    # The JPEG bytes themselves travel unchanged in a CompressedImage and decode to the same pixels.
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", jpeg_path.read_bytes())
    back = through_cdr(msg)
    assert bytes(back.data) == jpeg_path.read_bytes()
    np.testing.assert_array_equal(compressed_to_numpy(back, "rgb8"), rgb)


def test_real_pjlab_lidar_radar_camera(real_data):
    d = real_data / "pjlab-sensorscalib"
    lidar = read_pcd(d / "lidar.pcd")
    assert_same(lidar, pointcloud2_to_array(through_cdr(array_to_pointcloud2(lidar))))

    radar = read_radar_csv(d / "front_radar.csv")  # every CSV column, float32/float64/int64 fields
    msg = through_cdr(array_to_pointcloud2(radar, make_header(1_604_546_789_520_803_072, "front_radar")))
    assert_same(radar, pointcloud2_to_array(msg))
    mapped = pointcloud2_to_radar(msg, RadarFields())
    np.testing.assert_array_equal(mapped["doppler"], radar["doppler"])

    bgr = cv2.imread(str(d / "camera_0.jpg"))
    png = through_cdr(numpy_to_compressed(bgr, "bgr8", fmt="png"))
    np.testing.assert_array_equal(compressed_to_numpy(png, "bgr8"), bgr)
