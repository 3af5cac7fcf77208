"""Soak, short version: the launched graph (fusion_node with stand-in encoders) fed by a looping replay at 4x for
~24 s; RSS and /diagnostics latency are sampled, the loop is noticed (time jump), the pipeline never stalls, and
the launcher stops cleanly. (RSS growth over so short a run is start-up noise: the long run reports it.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cmr_fusion_ros.eval.stress import plot_soak, write_json, write_soak_params
from cmr_fusion_ros.ros.stress_runs import soak_run

REPO = Path(__file__).resolve().parents[2]
BAG = REPO / "bags" / "sample_town" / "session_00"


def test_short_soak_reports_rss_and_latency_per_interval(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    params = write_soak_params(REPO / "config" / "fusion.yaml", tmp_path, max_entries=2000)
    report = soak_run(BAG, params, duration_s=24, interval_s=6, sample_s=0.5, env=env, log=tmp_path / "launch.log",
                      launch_args=["--node-module", "fusion_node=tests.process.stress_soak_node"],
                      replay_args=["--rate", "4"])
    log = (tmp_path / "launch.log").read_text()
    assert not report.errors and report.launcher_exit == 0, log[-3000:]
    assert len(report.samples) >= 40 and all(s["rss_mb"] > 10 for s in report.samples)
    assert len(report.intervals) == 4
    for iv in report.intervals[1:]:  # no stall: every interval processes frames, the one spanning the loop too
        assert iv["processed"] > 0, report.intervals
        assert set(iv["latency_p99_ms"]) == {"camera", "lidar", "radar"}
    assert report.loops >= 1, "the bag looped (15 s at 4x) and the node reset its time-dependent state"
    assert max(s.get("entries", 0) for s in report.samples) <= 2000
    write_json(report, tmp_path / "soak.json")
    plot_soak(report, tmp_path / "soak.png")
    assert json.loads((tmp_path / "soak.json").read_text())["intervals"]
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    print("\n".join(report.lines()))
