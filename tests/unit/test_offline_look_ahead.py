"""Offline processing with look-ahead (decoded and embedded ahead in a worker process per topic, committed in log
order) gives the same output as everything in one process: the shipped sample bag through the default config with
look-ahead 0, 1 and 32 writes byte-identical events.jsonl and match bags and the same memory entries; so does
look-ahead 32 with the messages read through rosbags' reader and sent to the workers (the route for bag layouts
whose message positions ``bag.positions`` does not read) instead of each worker reading its own from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from rosbags.highlevel import AnyReader

import cmr_fusion_ros.bag.offline as offline
from cmr_fusion_ros.bag.events import typestore_with_events
from cmr_fusion_ros.bag.offline import MAX_LOOK_AHEAD, process_bags
from cmr_fusion_ros.cli import main
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.workers import FORK_AVAILABLE

REPO = Path(__file__).resolve().parents[2]
BAG = REPO / "bags" / "sample_town" / "session_00"
LOOK_AHEADS = (0, 1, 32)
THROUGH_ROSBAGS = "32 through rosbags"


def _config(memory_dir: Path) -> FusionConfig:
    return FusionConfig.from_dict({"session": "look_ahead", "memory": {"robot_id": "car1",
                                                                       "persistence": {"directory": str(memory_dir)}}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("look_ahead")
    out = {}
    for n in (*LOOK_AHEADS, THROUGH_ROSBAGS):
        cfg = _config(base / f"memory_{n}")
        with pytest.MonkeyPatch.context() as mp:
            if n == THROUGH_ROSBAGS:
                mp.setattr(offline, "message_positions", lambda reader, conns: None)
            summary = process_bags([BAG], cfg, out_dir=base / f"out_{n}", progress=False,
                                   look_ahead=32 if n == THROUGH_ROSBAGS else n)
        memory = SceneMemory.open(base / f"memory_{n}", cfg.memory)
        entries = [(e, e.vector.tobytes()) for e in memory.entries()]
        memory.close()
        with AnyReader([base / f"out_{n}" / "matches"], default_typestore=typestore_with_events()) as reader:
            bag = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        out[n] = (summary, (base / f"out_{n}" / "events.jsonl").read_bytes(), entries, bag)
    return out


def test_every_look_ahead_gives_the_same_events_memory_and_bag(runs):
    summary0, events0, entries0, bag0 = runs[0]
    assert summary0.events > 0 and events0.count(b"\n") == summary0.events
    assert summary0.memory_entries == len(entries0) > 100 and summary0.bad_messages == 0
    assert summary0.radar_scans_merged > 0  # the multi-scan radar merged in the workers as in one process
    assert any(topic.endswith("/matches") for topic, _, _ in bag0)
    for n in (*LOOK_AHEADS[1:], THROUGH_ROSBAGS):
        summary, events, entries, bag = runs[n]
        assert summary.look_ahead == (32 if n == THROUGH_ROSBAGS else n) and summary0.look_ahead == 0 and summary0.worker_processes == 0
        assert summary.worker_processes == (3 if FORK_AVAILABLE else 0)  # camera, LiDAR, radar: forked workers
        assert events == events0, f"look-ahead {n}: events.jsonl differs"
        assert entries == entries0, f"look-ahead {n}: memory entries differ"
        assert bag == bag0, f"look-ahead {n}: the matches bag differs"
        assert (summary.frames, summary.events, summary.true_events, summary.time_jumps, summary.radar_scans_merged) \
            == (summary0.frames, summary0.events, summary0.true_events, summary0.time_jumps, summary0.radar_scans_merged)


def test_blas_held_to_one_thread_while_processing(runs):
    assert {runs[n][0].blas_limit for n in LOOK_AHEADS} <= {"threadpoolctl", "openblas", "unchanged"}


@pytest.mark.parametrize("bad", [-1, MAX_LOOK_AHEAD + 1, 1.5, True, "4"])
def test_bad_look_ahead_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"'look_ahead'.*allowed: an integer in 0\.\.4096"):
        process_bags([BAG], _config(tmp_path / "m"), out_dir=tmp_path / "o", progress=False, look_ahead=bad)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["-1", "x", "4097", "2.5"])
def test_cli_refuses_a_bad_look_ahead(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as done:
        main(["process", str(BAG), "--out", str(tmp_path / "o"), "--look-ahead", bad, "--no-progress"])
    assert done.value.code == 2
    assert f"argument --look-ahead: '{bad}' is not an integer in 0..4096" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["process"], ["bench", "offline"]])
def test_cli_help_names_the_look_ahead(capsys, command):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--look-ahead N" in help_text and "(0 = everything in one process" in help_text and "default 32" in help_text

