"""The committed sample bag (bags/sample_town): what it holds, and that its documented command still makes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cmr_fusion_ros.cli import main
from cmr_fusion_ros.sim import session_epoch_ns

SAMPLE = Path(__file__).resolve().parents[2] / "bags" / "sample_town"


def _read(bag: Path, until_ns: int | None = None) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        for conn, stamp, raw in reader.messages():
            if until_ns is not None and stamp >= until_ns:
                continue
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out


# "Same seed, same messages" across machines: same topics, counts, stamps, frames, field layouts, integer fields and
# strings; floats equal within the tolerances below. The ray casting runs in float32 and other CPUs round differently
# (an AMD EPYC: 210-253 of about 2,550 points per LiDAR scan off by up to 1.5e-5 m), so a float may move by a few
# float32 steps, and a rendered pixel by one level before JPEG coding.
POINT_ATOL = 1e-4  # m (x, y, z), m/s (doppler), dBsm (rcs), intensity units: float32 fields of PointCloud2
FLOAT_TOL = 1e-9  # float64 message fields (poses, twists, calibration), absolute and relative
PIXEL_MEAN_ATOL = 0.5  # mean |difference| of decoded JPEG pixels (levels of 255) when the bytes differ; 1 level on
# 1 % of the pixels gives 0.12 after JPEG, two frames 0.2 s apart 6.2


def _same_cloud(a, b, path: str) -> None:
    from cmr_fusion_ros.core.pointcloud import decode_cloud

    for name in a.__dataclass_fields__:
        if name != "data":
            _same(getattr(a, name), getattr(b, name), f"{path}.{name}")
    pa, pb = decode_cloud(a), decode_cloud(b)
    assert pa.dtype == pb.dtype and pa.shape == pb.shape, path
    for field in pa.dtype.names:
        x, y = pa[field], pb[field]
        if x.dtype.kind == "f":
            worst = float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0))
            assert worst <= POINT_ATOL, f"{path}.{field}: differs by up to {worst:.3g} (> {POINT_ATOL})"
        else:
            assert np.array_equal(x, y), f"{path}.{field}"


def _same_jpeg(a, b, path: str) -> None:
    from cmr_fusion_ros.core.image import decode_compressed

    for name in a.__dataclass_fields__:
        if name != "data":
            _same(getattr(a, name), getattr(b, name), f"{path}.{name}")
    if np.array_equal(a.data, b.data):
        return
    ia, ib = decode_compressed(a), decode_compressed(b)
    assert ia.shape == ib.shape, path
    mean = float(np.abs(ia.astype(np.int16) - ib).mean())
    assert mean <= PIXEL_MEAN_ATOL, f"{path}: decoded pixels differ by {mean:.3g} levels on average"


def _same(a, b, path: str) -> None:
    kind = type(a).__name__
    if "PointCloud2" in kind:
        _same_cloud(a, b, path)
    elif "CompressedImage" in kind:
        _same_jpeg(a, b, path)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        if a.dtype.kind == "f":
            assert np.allclose(a, b, rtol=FLOAT_TOL, atol=FLOAT_TOL), path
        else:
            assert np.array_equal(a, b), path
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a).__name__ == type(b).__name__, path
        for name in a.__dataclass_fields__:
            _same(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, path


def test_sample_bag_topics_counts_and_revisit() -> None:
    bag = SAMPLE / "session_00"
    assert (bag / "metadata.yaml").is_file()
    size = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert size < 25 * 2**20
    msgs = _read(bag)
    counts = {t: len(v) for t, v in msgs.items()}
    assert counts == {"/camera/image/compressed": 300, "/camera/camera_info": 300, "/lidar/points": 300,
                      "/radar/points": 900, "/odom": 1200, "/tf": 1200, "/tf_static": 1}
    t = np.array([s for s, _ in msgs["/odom"]]) / 1e9
    p = np.array([[m.pose.pose.position.x, m.pose.pose.position.y] for _, m in msgs["/odom"]])
    d = np.linalg.norm(p[:, None] - p[None], axis=2)
    revisit = (d < 1.0) & (np.abs(t[:, None] - t[None]) > 20)
    assert revisit.any(axis=1).mean() > 0.2  # a good part of the drive is on places seen 20+ s before
    town = json.loads((SAMPLE / "town.json").read_text())
    assert town["seed"] == 7 and town["sessions"][0]["epoch_ns"] == msgs["/tf_static"][0][0]


def test_documented_command_reproduces_the_first_seconds(tmp_path: Path) -> None:
    out = tmp_path / "again"
    assert main(["simulate", "--out", str(out), "--seed", "7", "--duration", "2", "--sessions", "1", "--storage",
                 "mcap", "--config", str(SAMPLE / "sim_sample.yaml"), "--no-progress"]) == 0
    fresh = _read(out / "session_00")
    epoch = fresh["/tf_static"][0][0]
    committed = _read(SAMPLE / "session_00", until_ns=epoch + 2 * 10**9)
    assert fresh.keys() == committed.keys()
    for topic in fresh:
        assert [s for s, _ in fresh[topic]] == [s for s, _ in committed[topic]], topic
        for (_, a), (_, b) in zip(fresh[topic], committed[topic]):
            _same(a, b, topic)


def test_comparison_allows_rounding_and_catches_real_differences() -> None:
    import dataclasses

    import pytest

    bag = _read(SAMPLE / "session_00", until_ns=session_epoch_ns(0) + 5 * 10**9)
    scan = bag["/lidar/points"][0][1]
    img = bag["/camera/image/compressed"][0][1]
    odom = bag["/odom"][0][1]

    def moved(cloud, by: float):
        from cmr_fusion_ros.core.pointcloud import decode_cloud

        pts = decode_cloud(cloud).copy()
        pts["x"][::10] += np.float32(by)
        return dataclasses.replace(cloud, data=np.frombuffer(pts.tobytes(), np.uint8))

    _same(scan, moved(scan, 1.5e-5), "rounding")  # what another CPU's float32 rounding does
    with pytest.raises(AssertionError, match="x: differs by up to"):
        _same(scan, moved(scan, 1e-3), "moved")
    with pytest.raises(AssertionError, match="decoded pixels differ"):
        _same(img, dataclasses.replace(img, data=bag["/camera/image/compressed"][20][1].data), "other frame")
    shifted = dataclasses.replace(odom.pose.pose.position, x=odom.pose.pose.position.x + 1e-6)
    with pytest.raises(AssertionError, match="position.x"):
        _same(odom.pose.pose.position, shifted, "position")
