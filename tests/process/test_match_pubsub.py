"""MatchEventArray between two separate processes over real DDS (localhost discovery, this run's domain id)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PEER = Path(__file__).with_name("match_peer.py")
REPO = Path(__file__).resolve().parents[2]


def start(role: str) -> subprocess.Popen:
    env = dict(os.environ)  # the venv python + the parent's environment (ROS wheels' bootstrap needs both)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    return subprocess.Popen([sys.executable, str(PEER), role], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_match_event_array_crosses_processes():
    sub = start("subscriber")
    pub = start("publisher")
    try:
        out, err = sub.communicate(timeout=60)
        assert sub.returncode == 0, f"subscriber exit {sub.returncode}: {err[-2000:]}"
        assert pub.wait(timeout=30) == 0, pub.stderr.read()[-2000:]
    finally:
        for p in (sub, pub):
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = out.strip().splitlines()
    assert lines[0] == "READY"
    got = json.loads(lines[-1])
    assert got["stamp"] == 1_700_000_000_123_456_789 and got["frame_id"] == "camera_optical_frame"
    first, second = got["events"]
    assert first["query"] == ["camera", "/camera/image/compressed", 42]
    assert first["match"] == ["lidar", "/lidar/points", 1_699_999_820_000_000_000, "lidar", 7]
    assert first["score"] == 0.93 and first["rank"] == 0
    assert first["poses"] == [True, 10.0, True, 6.0] and first["distance"] == 5.0
    assert second["rank"] == 1 and second["match"][4] == 8 and second["distance"] is None
