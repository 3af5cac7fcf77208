"""Bags with any two or more of the three modalities: eval, eval-events, train and process take them, `--modalities`
chooses, the pairs present are reported and absent ones are no error."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cmr_fusion_ros.bag.inventory import bag_modalities, choose_modalities, pair_names, parse_modalities
from cmr_fusion_ros.bag.reader import BagTopics
from cmr_fusion_ros.cli import main
from cmr_fusion_ros.core.errors import BagError, ConfigError
from cmr_fusion_ros.core.types import Modality

rosbags = pytest.importorskip("rosbags")
from tests.unit.test_bag_reader import write_bag  # noqa: E402

C, L, R = Modality.CAMERA, Modality.LIDAR, Modality.RADAR


def drop_topics(src: Path, dst: Path, drop: set[str]) -> Path:
    """A copy of bag ``src`` without the topics in ``drop`` (messages copied as raw CDR)."""
    from rosbags.rosbag2 import Reader, Writer

    with Reader(src) as r, Writer(dst, version=9) as w:
        conns = {}
        for c in r.connections:
            if c.topic not in drop:
                conns[c.id] = w.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
        for c, t, raw in r.messages():
            if c.id in conns:
                w.write(conns[c.id], t, raw)
    return dst


def bag_without(tmp_path: Path, name: str, drop: set[str]) -> Path:
    full = tmp_path / f"{name}_full"
    write_bag(full)
    return drop_topics(full, tmp_path / name, drop)


def test_parse_and_choose_modalities() -> None:
    assert parse_modalities(None) is None
    assert parse_modalities("lidar, camera") == (C, L)
    assert parse_modalities(["radar", "camera,lidar"]) == (C, L, R)
    for bad in ("", "sonar", "camera,,sonar"):
        with pytest.raises(ConfigError, match="--modalities"):
            parse_modalities(bad)
    assert choose_modalities({C, L}, None, "bag") == (C, L)
    assert choose_modalities({C, L, R}, (C, R), "bag") == (C, R)
    with pytest.raises(BagError, match="asks for radar, which the bag lacks"):
        choose_modalities({C, L}, (C, R), "bag")
    with pytest.raises(BagError, match="at least 2 of camera, lidar, radar; found lidar"):
        choose_modalities({L}, None, "bag")
    assert choose_modalities({L}, None, "bag", minimum=1) == (L,)
    present, absent = pair_names((C, L), (C, L, R))
    assert present == ["camera->camera", "camera->lidar", "camera->radar", "lidar->camera", "lidar->lidar",
                       "lidar->radar"]
    assert absent == ["radar->camera", "radar->lidar", "radar->radar"]


def test_bag_modalities_reads_topics_and_types(tmp_path: Path) -> None:
    full = tmp_path / "full"
    write_bag(full)
    assert bag_modalities(full, BagTopics()) == {C: "/camera/image/compressed", L: "/lidar/points", R: "/radar/points"}
    no_radar = drop_topics(full, tmp_path / "nr", {"/radar/points"})
    assert bag_modalities(no_radar, BagTopics()) == {C: "/camera/image/compressed", L: "/lidar/points"}
    # a topic with the wrong type does not count
    assert bag_modalities(full, BagTopics(lidar="/odom")) == {C: "/camera/image/compressed", R: "/radar/points"}
    with pytest.raises(BagError, match="no such bag"):
        bag_modalities(tmp_path / "nope", BagTopics())


def test_eval_on_bags_without_radar(tmp_path: Path, capsys) -> None:
    db = bag_without(tmp_path, "db", {"/radar/points"})
    q = bag_without(tmp_path, "q", {"/radar/points"})
    res = tmp_path / "eval.json"
    assert main(["eval", "--database", str(db), "--queries", str(q), "--json", str(res), "--lidar-views", "1"]) == 0
    out = capsys.readouterr().out
    assert "modalities: database camera, lidar; queries camera, lidar; pairs evaluated: 4 of 9" in out
    assert "absent: camera->radar" in out and "camera -> lidar" in out and "radar ->" not in out
    data = json.loads(res.read_text())
    assert sorted(data["pairs"]) == ["camera->camera", "camera->lidar", "lidar->camera", "lidar->lidar"]
    assert data["modalities"] == {"database": ["camera", "lidar"], "queries": ["camera", "lidar"]}
    assert len(data["absent_pairs"]) == 5
    # choosing: one pair of a full bag; asking for what a bag lacks is an error naming it
    full = tmp_path / "full"
    write_bag(full)
    assert main(["eval", "--database", str(full), "--queries", str(full), "--modalities", "radar,camera",
                 "--lidar-views", "1"]) == 0
    out = capsys.readouterr().out
    assert "database camera, radar" in out and "lidar" not in out.split("pairs evaluated")[1].split("\n", 2)[1]
    assert main(["eval", "--database", str(db), "--queries", str(q), "--modalities", "camera,radar"]) == 2
    assert "asks for radar, which the bag lacks" in capsys.readouterr().err
    lidar_only = drop_topics(db, tmp_path / "lo", {"/camera/image/compressed"})
    assert main(["eval", "--database", str(lidar_only), "--queries", str(q)]) == 2
    assert "needs at least 2" in capsys.readouterr().err


def test_process_bag_without_radar_reports_the_pairs(tmp_path: Path, capsys) -> None:
    bag = bag_without(tmp_path, "nr", {"/radar/points"})
    out = tmp_path / "out"
    assert main(["process", str(bag), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "modalities: camera, lidar; skipped: radar (no topic /radar/points in the bags)" in text
    assert "events by pair (of the pairs these modalities can give): camera->camera" in text
    assert "radar->" not in text.split("events by pair")[1]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["frames"]) == {"camera", "lidar"}
    assert main(["process", str(bag), "--out", str(tmp_path / "o2"), "--no-progress", "--modalities", "lidar"]) == 0
    text = capsys.readouterr().out
    assert "modalities: lidar; skipped: camera (not chosen), radar (no topic /radar/points" in text
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["frames"] == {"lidar": 10}


def test_process_summary_says_no_events_rather_than_no_poses() -> None:
    from cmr_fusion_ros.bag.offline import OfflineSummary

    assert "n/a (no events)" in "\n".join(OfflineSummary(bags=["b"]).lines())
    s = OfflineSummary(bags=["b"], events=3)
    assert "n/a (no event has poses for both places)" in "\n".join(s.lines())
    s = OfflineSummary(bags=["b"], events=3, events_with_poses=2, true_events=1)
    assert ": 1/2" in "\n".join(s.lines())


def test_eval_events_modalities_filter(tmp_path: Path, capsys) -> None:
    bag = tmp_path / "bag"
    write_bag(bag)
    events = tmp_path / "events.jsonl"
    rows = [("camera", "lidar", 0.9), ("radar", "lidar", 0.8), ("lidar", "camera", 0.7)]
    events.write_text("".join(json.dumps({"stamp_ns": 2_500_000_000, "match_stamp_ns": 1_000_000_000, "score": s,
                                          "query_modality": q, "match_modality": m}) + "\n" for q, m, s in rows))
    assert main(["eval-events", str(events), "--truth", str(bag), "--exclude-recent", "0.5"]) == 0
    assert "pairs in the events: camera->lidar, lidar->camera, radar->lidar" in capsys.readouterr().out
    assert main(["eval-events", str(events), "--truth", str(bag), "--exclude-recent", "0.5",
                 "--modalities", "camera,lidar"]) == 0
    out = capsys.readouterr().out
    assert "modalities camera, lidar: 2 of 3 events kept" in out
    assert "pairs in the events: camera->lidar, lidar->camera" in out


def test_train_and_export_on_bags_without_radar(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    from cmr_fusion_ros.training.models import checkpoint_path

    town = tmp_path / "town"
    town.mkdir()
    for name in ("session_00", "session_01"):
        full = tmp_path / f"{name}_full"
        write_bag(full)
        drop_topics(full, town / name, {"/radar/points"})
    out = tmp_path / "run"
    common = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-anchors", "4", "--threads", "1"]
    assert main(["train", "--bags", str(town / "session_01"), "--val-bags", str(town / "session_00"),
                 str(town / "session_00"), "--out", str(out), *common]) == 0
    text = capsys.readouterr().out
    assert "modalities: camera, lidar; not trained: radar (no checkpoint written)" in text
    assert "camera->lidar=" in text and "radar" not in text.split("epoch 1/1")[1]
    assert checkpoint_path(out, "camera").is_file() and not checkpoint_path(out, "radar").exists()
    assert json.loads((out / "training.json").read_text())["modalities"] == ["camera", "lidar"]
    assert main(["export", "--checkpoints", str(out), "--out", str(tmp_path / "onnx"), "--no-latency"]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx")) == ["camera_encoder.onnx", "lidar_encoder.onnx"]
    # fine-tuning the two from a full set of encoders: the radar encoder is kept as loaded
    full_run = tmp_path / "full_run"
    write_bag(tmp_path / "full3")
    assert main(["train", "--bags", str(tmp_path / "full3"), "--out", str(full_run), *common]) == 0
    capsys.readouterr()
    assert main(["train", "--bags", str(town / "session_01"), "--out", str(tmp_path / "tuned"), "--init",
                 str(full_run), *common]) == 0
    text = capsys.readouterr().out
    assert "not trained: radar (kept as loaded from --init)" in text and "frozen: radar; training: camera, lidar" in text
    assert checkpoint_path(tmp_path / "tuned", "radar").read_bytes() != b""
    assert main(["train", "--bags", str(town / "session_01"), "--out", str(tmp_path / "bad"), "--modalities",
                 "camera,radar", *common]) == 2
    assert "asks for radar" in capsys.readouterr().err


def test_samples_without_a_pose_are_counted_and_the_gap_rule_is_an_option(tmp_path: Path, capsys) -> None:
    from cmr_fusion_ros.bag.reader import read_samples
    from cmr_fusion_ros.commands.eval import add_topic_arguments, topics_from_args

    bag = tmp_path / "bag"
    write_bag(bag)  # odometry from 1.0 s, sensors from 0.8 s: extrapolating 0.1 s, the first sample has no pose
    dropped: dict = {}
    n = len(list(read_samples(bag, BagTopics(max_extrapolation_ns=100_000_000), dropped=dropped)))
    assert dropped == {"camera": 1, "lidar": 1, "radar": 1} and n == 27
    assert main(["eval", "--database", str(bag), "--queries", str(bag), "--lidar-views", "1",
                 "--max-pose-extrapolation", "0.1"]) == 0
    out = capsys.readouterr().out
    assert ("database: skipped (no odometry pose: --max-pose-gap 1 s, --max-pose-extrapolation 0.1 s): "
            "camera 1, lidar 1, radar 1") in out
    assert main(["eval", "--database", str(bag), "--queries", str(bag), "--lidar-views", "1"]) == 0
    assert "skipped" not in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    add_topic_arguments(parser)
    topics = topics_from_args(parser.parse_args(["--max-pose-gap", "0.5", "--max-pose-extrapolation", "0"]))
    assert (topics.max_gap_ns, topics.max_extrapolation_ns) == (500_000_000, 0)
    defaults = topics_from_args(parser.parse_args([]))
    assert (defaults.max_gap_ns, defaults.max_extrapolation_ns) == (BagTopics().max_gap_ns,
                                                                    BagTopics().max_extrapolation_ns)
    for flag in ("--max-pose-gap", "--max-pose-extrapolation"):
        assert main(["eval", "--database", str(bag), "--queries", str(bag), flag, "-1"]) == 2
        assert flag in capsys.readouterr().err


def test_process_summary_counts_frames_the_memory_did_not_store() -> None:
    from cmr_fusion_ros.bag.offline import OfflineSummary

    s = OfflineSummary(bags=["b"], memory_entries=2, memory_skipped_duplicate=4)
    assert "memory: 2 entries (4 frames not stored as near-duplicates)" in s.lines()
    assert "memory: 2 entries" in OfflineSummary(bags=["b"], memory_entries=2).lines()
