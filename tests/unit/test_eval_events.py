"""Event-level evaluation on scripted drives: revisits, true/false events, detection windows, the PR curve, the
command on the sample bag."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.eval.events import (
    EvalSettings, EventRecord, TruthTracks, evaluate_events, find_revisits, load_events, plot_evaluation)

NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "bags" / "sample_town" / "session_00"


def loop_track(laps: float = 2.0, period_s: float = 40.0, radius: float = 50.0, rate_hz: float = 10.0, t0: int = 0):
    """A circle driven counter-clockwise: the ego is back at every place after ``period_s``."""
    t = np.arange(0, laps * period_s, 1.0 / rate_hz)
    ang = 2 * np.pi * t / period_s
    pos = np.stack([radius * np.cos(ang), radius * np.sin(ang), np.zeros_like(t)], axis=1)
    return (t0 + np.round(t * NS)).astype(np.int64), pos


def line_track(length_s: float = 60.0, speed: float = 10.0, rate_hz: float = 10.0, t0: int = 0, y: float = 0.0):
    t = np.arange(0, length_s, 1.0 / rate_hz)
    pos = np.stack([speed * t, np.full_like(t, y), np.zeros_like(t)], axis=1)
    return (t0 + np.round(t * NS)).astype(np.int64), pos


def ev(q_s: float, m_s: float, score: float, qm="camera", mm="lidar") -> EventRecord:
    return EventRecord(round(q_s * NS), round(m_s * NS), score, qm, mm)


SETTINGS = EvalSettings(radius_m=5.0, exclude_recent_s=10.0, sample_s=0.1, gap_s=1.0, slack_s=1.0, max_window_s=0.0)


def test_a_straight_drive_has_no_revisit_and_every_match_is_false():
    truth = TruthTracks.from_arrays([line_track()])
    assert find_revisits(truth, SETTINGS) == []
    res = evaluate_events([ev(30, 10, 0.9)], truth, SETTINGS)  # 200 m apart
    assert res.revisits == 0 and math.isnan(res.recall)
    assert res.true_events == 0 and res.precision == 0.0
    assert res.event_distance[0] == pytest.approx(200.0, abs=1e-6)


def test_a_second_lap_is_one_revisit_spanning_the_lap():
    truth = TruthTracks.from_arrays([loop_track(laps=2.0, period_s=40.0)])
    revisits = find_revisits(truth, SETTINGS)
    # places within 5 m of a pose >= 10 s earlier: the whole second lap (from t = 40 s minus ~5 m / 7.85 m/s)
    assert len(revisits) == 1
    r = revisits[0]
    assert 39.0 <= r.start_ns / NS <= 40.0
    assert r.end_ns / NS == pytest.approx(79.9, abs=0.11)


def test_the_exclusion_window_keeps_the_recent_past_out():
    truth = TruthTracks.from_arrays([loop_track(laps=2.0, period_s=40.0)])
    # with 50 s exclusion nothing of the second lap is 50 s after a pose at the same place except its end
    revisits = find_revisits(truth, EvalSettings(radius_m=5.0, exclude_recent_s=50.0, sample_s=0.1, max_window_s=0.0))
    assert len(revisits) == 1 and revisits[0].start_ns / NS >= 49.9


def test_true_and_false_events_precision_recall_and_the_pr_curve():
    truth = TruthTracks.from_arrays([loop_track(laps=2.0, period_s=40.0)])
    events = [
        ev(50.0, 10.0, 0.9),   # same place one lap later: true, inside the revisit
        ev(60.0, 20.0, 0.8),   # true, same revisit (it was already detected)
        ev(70.0, 10.0, 0.7),   # a quarter lap away: false
        ev(15.0, 1.0, 0.95),   # ~ 14 s of arc apart: false (and not a revisit)
    ]
    res = evaluate_events(events, truth, SETTINGS)
    assert res.event_true == [True, True, False, False]
    assert res.true_events == 2 and res.precision == pytest.approx(0.5)
    assert res.revisits == 1 and res.detected_revisits == 1 and res.recall == 1.0
    # curve by descending score: 0.95 (F), 0.9 (T, detects), 0.8 (T), 0.7 (F)
    assert [c["threshold"] for c in res.curve] == [0.95, 0.9, 0.8, 0.7]
    assert [c["precision"] for c in res.curve] == pytest.approx([0.0, 0.5, 2 / 3, 0.5])
    assert [c["recall"] for c in res.curve] == [0.0, 1.0, 1.0, 1.0]
    assert not res.goal_met  # no threshold with precision >= 0.95 and recall >= 0.7
    assert res.best_at_target_recall["precision"] == pytest.approx(2 / 3)
    assert res.pairs == {"camera->lidar": {"events": 4, "true": 2}}


def test_goal_met_when_a_threshold_separates_true_from_false():
    truth = TruthTracks.from_arrays([loop_track(laps=2.0, period_s=40.0)])
    events = [ev(50.0, 10.0, 0.9), ev(70.0, 10.0, 0.3)]
    res = evaluate_events(events, truth, SETTINGS)
    assert res.goal_met
    assert res.best_at_target_precision == {"threshold": 0.9, "precision": 1.0, "recall": 1.0, "events": 1}


def test_an_event_outside_every_revisit_window_detects_nothing():
    # two separate revisits (laps 2 and 3 are one run; a gap in the truth splits them into two tracks)
    truth = TruthTracks.from_arrays([line_track(60.0, t0=0), line_track(60.0, t0=100 * NS, y=1.0)])
    revisits = find_revisits(truth, SETTINGS)
    assert len(revisits) == 1 and revisits[0].track == 1  # the second track re-drives the first (1 m aside)
    # a true event whose query stamp is not in the revisit: the same place but within the first track,
    # only possible with a match stamp in the future of the query (a bad event source), detects nothing
    res = evaluate_events([ev(10.0, 110.0, 0.9)], truth, SETTINGS)
    assert res.event_true == [True] and res.detected_revisits == 0


def test_stamps_outside_the_truth_count_as_false():
    truth = TruthTracks.from_arrays([loop_track()])
    res = evaluate_events([ev(500.0, 10.0, 0.9)], truth, SETTINGS)
    assert res.no_truth_events == 1 and res.true_events == 0 and res.precision == 0.0


def test_sessions_revisit_each_others_places():
    a = loop_track(laps=0.9, period_s=40.0, t0=0)  # not quite closing its own loop
    b = loop_track(laps=0.9, period_s=40.0, t0=3 * 3600 * NS)  # 3 h later, the same loop
    truth = TruthTracks.from_arrays([a, b])
    revisits = find_revisits(truth, SETTINGS)
    assert [r.track for r in revisits] == [1]
    q = 3 * 3600 + 20.0
    res = evaluate_events([EventRecord(round(q * NS), 20 * NS, 0.7, "radar", "camera")], truth, SETTINGS)
    assert res.event_true == [True] and res.recall == 1.0


def test_min_revisit_drops_short_crossings():
    # a second straight track crossing the first at right angles: a ~1 s crossing
    t, pos = line_track(20.0, t0=0)
    t2 = (np.arange(0, 20.0, 0.1) * NS).astype(np.int64) + 100 * NS
    pos2 = np.stack([np.full(t2.shape, 100.0), -100.0 + 10.0 * (t2 - t2[0]) / NS, np.zeros(t2.shape)], axis=1)
    truth = TruthTracks.from_arrays([(t, pos), (t2, pos2)])
    assert len(find_revisits(truth, SETTINGS)) == 1
    assert find_revisits(truth, EvalSettings(radius_m=5.0, exclude_recent_s=10.0, sample_s=0.1,
                                             min_revisit_s=2.0, max_window_s=0.0)) == []


@pytest.mark.parametrize("key,value", [("radius_m", 0.0), ("sample_s", -1.0), ("exclude_recent_s", float("nan")),
                                       ("target_precision", 1.5)])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        EvalSettings(**{key: value})


def test_load_events_reports_the_bad_line(tmp_path):
    good = {"stamp_ns": 5, "match_stamp_ns": 1, "score": 0.5, "query_modality": "camera", "match_modality": "lidar"}
    p = tmp_path / "events.jsonl"
    p.write_text(json.dumps(good) + "\n\n" + json.dumps({"stamp_ns": 1}) + "\n")
    with pytest.raises(ConfigError, match="events.jsonl:3"):
        load_events([p])
    p.write_text(json.dumps(good) + "\n")
    assert load_events([p]) == [EventRecord(5, 1, 0.5, "camera", "lidar")]


def test_plot_writes_a_png(tmp_path):
    truth = TruthTracks.from_arrays([loop_track()])
    events = [ev(50.0, 10.0, 0.9), ev(70.0, 10.0, 0.3)]
    res = evaluate_events(events, truth, SETTINGS)
    out = plot_evaluation(res, events, truth, tmp_path / "pr.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="sample bag not present")
def test_command_on_the_sample_bag(tmp_path, capsys):
    from cmr_fusion_ros.bag.reader import read_pose_track
    from cmr_fusion_ros.cli import main

    track = read_pose_track(SAMPLE)
    t0 = int(track.stamps_ns[0])
    # the sample drive passes its first-lap places again from about 37 s: an event at 45 s matching the pose
    # nearest to its own position before 15 s is true, one matching 20 s earlier is not (8 m/s * 20 s away)
    i45 = int(np.searchsorted(track.stamps_ns, t0 + 45 * NS))
    early = track.stamps_ns < t0 + 15 * NS
    j = int(np.argmin(np.linalg.norm(track.positions[early] - track.positions[i45], axis=1)))
    events = [
        {"stamp_ns": int(track.stamps_ns[i45]), "match_stamp_ns": int(track.stamps_ns[j]), "score": 0.8,
         "query_modality": "lidar", "match_modality": "camera"},
        {"stamp_ns": int(track.stamps_ns[i45]), "match_stamp_ns": int(track.stamps_ns[i45]) - 20 * NS, "score": 0.6,
         "query_modality": "radar", "match_modality": "camera"},
    ]
    results = tmp_path / "events.jsonl"
    results.write_text("".join(json.dumps(e) + "\n" for e in events))
    rc = main(["eval-events", str(results), "--truth", str(SAMPLE), "--exclude-recent", "20", "--max-window", "0",
               "--plot", str(tmp_path / "pr.png"), "--json", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "precision 0.500" in out and "command: cmr-fusion eval-events" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["figures"]["true_events"] == 1 and report["figures"]["revisits"] >= 1
    assert report["figures"]["detected_revisits"] >= 1
    assert report["command"].startswith("cmr-fusion eval-events")
    md = (tmp_path / "report.md").read_text()
    assert "pr.png" in md and "load average" in md
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_default_max_window_is_ten_seconds():
    assert EvalSettings().max_window_s == 10.0


def test_max_window_cuts_a_long_revisit_into_counted_parts():
    truth = TruthTracks.from_arrays([loop_track(laps=2.0, period_s=40.0)])
    strict = EvalSettings(radius_m=5.0, exclude_recent_s=10.0, sample_s=0.1, max_window_s=10.0)
    parts = find_revisits(truth, strict)
    assert len(parts) == 5 and all(  # the run is 40.5 s long (from 39.4 s)
        p.duration_s <= 10.0 + 1e-9 for p in parts)
    assert parts[0].start_ns == find_revisits(truth, SETTINGS)[0].start_ns
    res = evaluate_events([ev(50.0, 10.0, 0.9)], truth, strict)  # one event detects one part of five
    assert res.revisits == 5 and res.detected_revisits == 1 and res.recall == 0.2
