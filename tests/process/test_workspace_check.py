"""scripts/workspace_check.sh: the committed tree (git archive HEAD) builds with plain colcon against the ROS 2 wheels
and fusion_node starts from install/ (slow: a fresh venv, about 2 minutes with pip's cache warm)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_plain_colcon_builds_the_workspace_and_fusion_node_starts_from_install(tmp_path: Path) -> None:
    assert (REPO / ".git").exists(), "the check builds `git archive HEAD`: run it in a git clone"
    env = dict(os.environ)
    # not this test's venv: the script makes its own underlay
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.prefix) / "bin")
    env.pop("VIRTUAL_ENV", None)
    env["RUN_S"] = "3"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "workspace_check.sh"), str(tmp_path / "check")],
                          capture_output=True, text=True, env=env, timeout=1800, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    lines = proc.stdout.strip().splitlines()
    assert "cmr_fusion_ros\tsrc/cmr_fusion_ros\t(ros.ament_cmake)" in lines, out[-6000:]  # plain `colcon list`
    assert "Summary: 1 package finished" in proc.stdout
    assert any(line.startswith("workspace_check: imported MatchEvent, MatchEventArray") for line in lines)
    assert any("/fusion_node/matches (cmr_fusion_msgs/msg/MatchEventArray) seen" in line for line in lines)
    assert lines[-1].startswith("workspace_check: OK: plain colcon build of cmr_fusion_ros"), lines[-1]
