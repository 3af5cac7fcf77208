"""Crash stress, short version: SIGKILL the offline pipeline at random moments while it writes a persistent memory
(flushed every 50 ms, snapshots every 300 records), reload after every kill: no flushed entry is ever lost."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cmr_fusion_ros.eval.stress import crash_stress, stress_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BAG = REPO / "bags" / "sample_town" / "session_00"
PARAMS = REPO / "config" / "fusion.yaml"


def _child(memory: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "stress_crash_child.py"), str(BAG), "--params", str(PARAMS),
            "--memory", str(memory), *extra]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_sigkill_while_processing_loses_no_flushed_entry(tmp_path):
    memory = tmp_path / "memory"
    config = stress_config(PARAMS, memory_dir=memory)
    report = crash_stress(_child(memory), memory, config.memory, kills=12, seed=3, max_delay_s=3.0, env=_env())
    print("\n".join(report.lines()))
    assert report.kills == 12 and report.reloads_ok == 12, report.reload_errors
    assert report.entries_lost == 0 and report.ok
    assert report.durable_max > 0 and report.final_entries >= report.durable_max
    assert report.kills - report.kills_before_load - report.runs_finished >= 4  # most kills hit a running pipeline


def test_the_check_catches_a_claimed_but_unflushed_entry(tmp_path):
    memory = tmp_path / "memory"
    config = stress_config(PARAMS, memory_dir=memory)
    report = crash_stress(_child(memory, "--lie", "--flush-interval", "3600"), memory, config.memory, kills=2,
                          seed=1, max_delay_s=1.5, env=_env())
    assert report.entries_lost > 0 and not report.ok
    assert "flushed entries missing" in report.reload_errors[0]
