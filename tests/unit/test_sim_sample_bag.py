"""The committed sample bag (bags/sample_town): what it holds, and that its documented command still makes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmr_fusion_ros.cli import main

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


def _same(a, b, path: str) -> None:
    if isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            _same(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
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
