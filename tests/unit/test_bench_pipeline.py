"""bench pipeline: stamps written into serialised messages, generated content, the bench's parameters, and a smoke
run of the whole command (relay floor + cmr-fusion launch with tiny models) on small messages. The messages, the
publisher, the relay and the subscriber are in ``cmr_fusion_ros.ros.bench_nodes``; the rest has no ROS."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file
from cmr_fusion_ros.core.decode import decode_sensor
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.bench_pipeline import (
    bench_parameters, generate_content, latency_stats, read_stamp, write_stamp)
from cmr_fusion_ros.paths import config_file

rclpy = pytest.importorskip("rclpy")

from cmr_fusion_ros.ros.bench_nodes import generate_messages  # noqa: E402  (needs rclpy)


def test_generated_content_is_seeded_and_shaped():
    a = generate_content("camera", variants=2, seed=5, width=64, height=48)
    b = generate_content("camera", variants=2, seed=5, width=64, height=48)
    assert len(a) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], a[1])
    assert a[0].shape == (48, 64, 3) and a[0].dtype == np.uint8
    lidar = generate_content("lidar", variants=1, lidar_rings=8, lidar_columns=16)[0]
    assert lidar.shape == (8 * 16,) and lidar.dtype.names == ("x", "y", "z", "intensity", "ring")
    radar = generate_content("radar", variants=3, radar_points=20)
    assert [r.shape for r in radar] == [(20,)] * 3 and radar[0].dtype.names == ("x", "y", "z", "doppler", "rcs")
    with pytest.raises(ValueError, match="unknown stream 'sonar'"):
        generate_content("sonar")


@pytest.mark.parametrize("stream,transport", [("camera", "compressed"), ("camera", "raw"), ("lidar", "compressed"),
                                              ("radar", "compressed")])
def test_stamp_written_into_the_cdr_reads_back_through_rclpy(stream, transport):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image, PointCloud2

    kind, bufs = generate_messages(stream, variants=2, width=64, height=48, lidar_rings=64, lidar_columns=32,
                                   radar_points=20, camera_transport=transport)
    cls = {"sensor_msgs/msg/CompressedImage": CompressedImage, "sensor_msgs/msg/Image": Image,
           "sensor_msgs/msg/PointCloud2": PointCloud2}[kind]
    assert len(bufs) == 2 and bufs[0] != bufs[1]
    buf = bytearray(bufs[1])
    stamp = 1_764_000_123_456_789_012
    write_stamp(buf, stamp)
    assert read_stamp(buf) == stamp
    msg = deserialize_message(bytes(buf), cls)
    assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp
    data = decode_sensor(Modality(stream), msg, compressed=kind.endswith("CompressedImage"))
    if stream == "camera":
        assert data.shape == (48, 64, 3)
    elif stream == "lidar":
        assert data.shape[0] == 64 * 32 and np.isfinite(data["x"]).all()
    else:
        assert data.shape[0] == 20


def test_bench_parameters_make_every_frame_an_event_and_stay_valid():
    base = load_parameter_file(config_file("fusion.yaml"), "fusion_node")
    p = bench_parameters(base, models_dir="/some/models", camera_transport="raw")
    cfg = FusionConfig.from_dict(p)
    assert cfg.policy.min_score == -1.0 and cfg.policy.exclude_recent_s == 0.0 and cfg.policy.debounce_s == 0.0
    assert base["policy"]["min_probability"] > 0 and cfg.policy.min_probability == 0.0  # the shipped cards' filter off
    assert cfg.policy.top_k == 1 and cfg.memory.persistence.directory == "" and cfg.odometry.topic == ""
    cam = cfg.stream(Modality.CAMERA)
    assert cam.transport == "raw" and cam.topic == "camera/image"
    assert cfg.encoders.models_dir == "/some/models"
    assert base["policy"]["min_score"] != -1.0  # the base is not modified


def test_latency_stats():
    s = latency_stats([1.0, 2.0, 3.0, 100.0])
    assert s["n"] == 4 and s["max"] == 100.0 and s["p50"] == 2.5 and 3.0 < s["p99"] < 100.0
    assert latency_stats([])["n"] == 0


def test_bench_pipeline_command_smoke(tmp_path, capsys):
    from cmr_fusion_ros.cli import main
    from tests.bench_tiny_models import write_tiny_models

    models = write_tiny_models(tmp_path / "models")
    rc = main(["bench", "pipeline", "--models", str(models), "--duration", "3", "--warmup", "0.5", "--width", "160",
               "--height", "120", "--lidar-columns", "64", "--radar-points", "32",
               "--domain-id", os.environ.get("ROS_DOMAIN_ID", "42"), "--json", str(tmp_path / "bench.json"),
               "--plot", str(tmp_path / "bench.png")])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["command"].startswith("cmr-fusion bench pipeline")
    streams = report["figures"]["streams"]
    assert set(streams) == {"camera", "lidar", "radar"}
    for s, f in streams.items():
        assert f["floor_ms"]["n"] > 0, s  # relayed messages arrived
        assert f["published_floor"] > 0 and f["published_pipeline"] > 0
        assert int(f["node"]["received"]) > 0, s  # the node saw the stream (from its /diagnostics)
    # the node processed frames and every processed frame gave an event: e2e samples exist
    assert sum(f["pipeline_e2e_ms"]["n"] for f in streams.values()) > 0
    assert report["figures"]["phases"]["pipeline"]["launcher_exit"] == 0
    assert "p99 difference" in out and "CPU: fusion_node" in out
    assert (tmp_path / "bench.md").read_text().count("|") > 10 and (tmp_path / "bench.png").stat().st_size > 1000
