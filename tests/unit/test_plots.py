"""The trajectory/matches plot is written for true, false and pose-less events."""

from __future__ import annotations

import numpy as np

from cmr_fusion_ros.eval.plots import plot_matches


def test_plot_matches_writes_a_png(tmp_path):
    traj = np.c_[np.linspace(0, 100, 50), np.zeros(50)]
    events = [
        {"query_modality": "camera", "match_modality": "lidar", "query_pose": [90, 0, 0], "match_pose": [91, 0, 0], "distance": 1.0},
        {"query_modality": "radar", "match_modality": "lidar", "query_pose": [80, 0, 0], "match_pose": [10, 0, 0], "distance": 70.0},
        {"query_modality": "lidar", "match_modality": "camera", "query_pose": None, "match_pose": None, "distance": None},
    ]
    out = plot_matches(traj, events, tmp_path / "sub" / "m.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_other_robots_matches_get_their_own_colour(tmp_path):
    from cmr_fusion_ros.eval.plots import match_label

    own = {"query_modality": "camera", "match_modality": "lidar", "match_robot": "car2"}
    other = {**own, "match_robot": "car1"}
    assert match_label(own, "car2") == "camera→lidar" and match_label(other, "car2") == "car1: camera→lidar"
    assert match_label(other) == "camera→lidar"  # without own_robot: by pair only
    traj = np.c_[np.linspace(0, 100, 50), np.zeros(50)]
    events = [{**e, "query_pose": [50, 0, 0], "match_pose": [51, 0, 0], "distance": 1.0} for e in (own, other)]
    out = plot_matches(traj, events, tmp_path / "fleet.png", own_robot="car2")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
