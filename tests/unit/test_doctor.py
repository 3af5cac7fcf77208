"""`cmr-fusion doctor`: input statistics, training ranges from the model cards, embedding spread, verdict; the
start-up check the fusion node runs on its first frames."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.cli import main
from cmr_fusion_ros.core.domain import (
    SPREAD_MARGIN,
    DomainMonitor,
    InputRanges,
    check_modality,
    derive_ranges,
    frame_stats,
    hfov_from_camera_info,
    mean_pairwise_cosine,
    monitor_for,
)
from cmr_fusion_ros.core.encoder import load_encoders
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.pointcloud import structured
from cmr_fusion_ros.core.types import Modality

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
SAMPLE = REPO / "bags" / "sample_town" / "session_00"
REAL = REPO / "tests" / "data" / "real"
SHARED_DGP = REPO.parent / "shared" / "data" / "real" / "tri-dgp" / "tests" / "data" / "dgp" / "test_scene"
C, L, R = Modality.CAMERA, Modality.LIDAR, Modality.RADAR


def _lidar(n_ground: int = 4000, mount: float = 1.9, intensity: float = 100.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.uniform(3, 40, n_ground)
    a = rng.uniform(-np.pi, np.pi, n_ground)
    walls = rng.uniform(-1, 6, n_ground // 4)
    x = np.concatenate([r * np.cos(a), np.full(len(walls), 20.0)])
    y = np.concatenate([r * np.sin(a), rng.uniform(-5, 5, len(walls))])
    z = np.concatenate([np.full(n_ground, -mount), walls - mount])
    return structured([("x", x.astype(np.float32)), ("y", y.astype(np.float32)), ("z", z.astype(np.float32)),
                       ("intensity", np.full(len(x), intensity, np.float32))])


def test_frame_stats_measure_what_the_preprocessing_does_not_absorb() -> None:
    s = frame_stats(L, _lidar())
    assert s["points"] == 5000 and s["intensity_p95"] == pytest.approx(100.0)
    assert s["ground_z_m"] == pytest.approx(-1.9, abs=1e-5)
    assert -33 < s["elev_min_deg"] < -25 and s["elev_max_deg"] > 10
    assert frame_stats(L, _lidar(mount=0.0))["ground_z_m"] == pytest.approx(0.0, abs=1e-5)  # DGP's vehicle-height frame
    img = np.zeros((300, 400, 3), np.uint8)
    assert frame_stats(C, img, hfov_deg=90.0) == {"width": 400.0, "height": 300.0, "hfov_deg": 90.0}
    assert "hfov_deg" not in frame_stats(C, img)
    assert frame_stats(C, img[::4, ::4], reduction=4) == {"width": 400.0, "height": 300.0}  # a JPEG decoded at 1/4
    az = np.radians(np.linspace(-50, 50, 101))
    radar = structured([("x", (30 * np.cos(az)).astype(np.float32)), ("y", (30 * np.sin(az)).astype(np.float32)),
                        ("z", np.zeros(101, np.float32))])
    rs = frame_stats(R, radar)
    assert rs["points"] == 101 and rs["azimuth_span_deg"] == pytest.approx(98.0, abs=0.1)
    assert rs["range_p95_m"] == pytest.approx(30.0, abs=1e-4)
    assert hfov_from_camera_info(400, 200.0) == pytest.approx(90.0)
    assert hfov_from_camera_info(400, 0.0) is None


def test_mean_pairwise_cosine_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    e = rng.standard_normal((7, 16))
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    ref = np.mean([u[i] @ u[j] for i in range(7) for j in range(7) if i != j])
    assert mean_pairwise_cosine(e) == pytest.approx(ref)
    pos = np.array([[0, 0], [5, 0], [50, 0], [55, 0], [100, 0], [0, 50], [0, 90]], float)
    far = [(i, j) for i in range(7) for j in range(7) if i != j and np.hypot(*(pos[i] - pos[j])) > 20]
    assert mean_pairwise_cosine(e, pos) == pytest.approx(np.mean([u[i] @ u[j] for i, j in far]))
    assert math.isnan(mean_pairwise_cosine(e[:1]))
    assert math.isnan(mean_pairwise_cosine(e[:2], pos[:2]))  # 5 m apart: no pair of different places
    assert mean_pairwise_cosine(np.ones((4, 3))) == pytest.approx(1.0)  # collapsed


def test_ranges_round_trip_validation_and_derivation() -> None:
    r = derive_ranges(L, [{"points": 20000, "ground_z_m": -1.9}, {"points": 30000, "ground_z_m": -1.8}], 0.14, "cmd")
    assert r.ranges["points"] == (10000, 45000) and r.ranges["ground_z_m"] == pytest.approx((-2.4, -1.3))
    assert InputRanges.from_dict(L, r.to_dict()) == r
    for bad, what in (({"ranges": {"beams": [1, 2]}}, "beams"), ({"ranges": {"points": [3, 1]}}, "low <= high"),
                      ({"ranges": {"points": "x"}}, r"\[low, high\]"), ({}, "ranges"),
                      ({"ranges": {}, "embedding_mean_cosine": 3}, "embedding_mean_cosine")):
        with pytest.raises(ConfigError, match=what):
            InputRanges.from_dict(L, bad)


def test_check_modality_names_each_statistic_out_of_range_and_a_collapse() -> None:
    ranges = InputRanges(L, {"points": (10000, 35000), "intensity_p95": (57, 174), "ground_z_m": (-2.4, -1.4)}, 0.14)
    dgp_like = [frame_stats(L, _lidar(n_ground=40000, mount=0.0, intensity=0.17, seed=i)) for i in range(3)]
    v = check_modality(L, dgp_like, ranges, mean_cosine=0.9)
    assert not v.in_domain and v.collapsed
    text = "\n".join(v.reasons())
    assert "points 5e+04 outside the training range 1e+04..3.5e+04" in text
    assert "intensity_p95 0.17 outside" in text and "ground_z_m" in text and "mean cosine between frames 0.90" in text
    assert set(v.unchecked) == {"elev_min_deg", "elev_max_deg"}
    sim_like = [frame_stats(L, _lidar(n_ground=16000, seed=i)) for i in range(3)]
    ok = check_modality(L, sim_like, ranges, mean_cosine=0.2)
    assert ok.in_domain and not ok.reasons()
    assert check_modality(L, sim_like, None).in_domain  # no ranges: nothing to hold against it


def test_domain_monitor_warns_once_after_its_first_frames() -> None:
    ranges = {L: InputRanges(L, {"points": (10000, 35000), "ground_z_m": (-2.4, -1.4)})}
    mon = DomainMonitor(ranges, frames=3)
    notes = [mon.observe(L, _lidar(n_ground=40000, mount=0.0, seed=i)) for i in range(6)]
    assert notes[:2] == [None, None] and notes[3:] == [None, None, None]
    assert "lidar input looks unlike the lidar encoder's training data (first 3 frames)" in notes[2]
    assert "ground_z_m" in notes[2] and "cmr-fusion doctor" in notes[2]
    quiet = DomainMonitor(ranges, frames=2)
    assert [quiet.observe(L, _lidar(n_ground=16000, seed=i)) for i in range(3)] == [None, None, None]
    assert quiet.verdicts[L].in_domain
    assert quiet.observe(C, np.zeros((10, 10, 3), np.uint8)) is None  # no ranges for that modality: not checked


def test_shipped_cards_carry_training_ranges_the_node_monitor_reads() -> None:
    encoders = load_encoders(MODELS)
    mon = monitor_for(encoders)
    assert set(mon.ranges) == {C, L, R}
    lid = mon.ranges[L]
    assert lid.ranges["ground_z_m"][0] < -1.9 < lid.ranges["ground_z_m"][1]  # the simulator's 1.9 m LiDAR mount
    assert lid.ranges["intensity_p95"][0] > 1.0  # the simulator's 0-255 intensity scale
    assert mon.ranges[C].ranges["hfov_deg"][0] < 90 < mon.ranges[C].ranges["hfov_deg"][1]
    assert lid.mean_cosine is not None and "--derive-ranges" in lid.source


def test_doctor_on_the_sample_bag(capsys, tmp_path: Path) -> None:
    """The sample bag: camera and radar like the training data; its 16x256 LiDAR is not (2,520 points per scan,
    fewer than any rig of the training; the cross-rig LiDAR encoder keeps its frames apart, no collapse)."""
    out = tmp_path / "doctor.json"
    rc = main(["doctor", str(SAMPLE), "--models", str(MODELS), "--max-frames", "60", "--json", str(out)])
    text = capsys.readouterr().out
    assert "camera: in domain" in text and "radar: in domain" in text and "lidar: OUT OF DOMAIN" in text
    assert "- points 2526 outside the training range" in text and "fine-tune the lidar encoder" in text
    assert "embeddings collapse" not in text
    lidar = text[text.index("lidar: OUT OF DOMAIN"):text.index("radar: ")]
    spread, trained = (float(v) for v in re.search(
        r"mean cosine between frames (\d\.\d\d) \(training data (\d\.\d\d)\)", lidar).groups())
    assert spread <= trained + SPREAD_MARGIN  # reported beside the training data's and not called a collapse
    assert rc == 1
    (rep,) = json.loads(out.read_text())
    assert rep["modalities"]["camera"]["in_domain"] and not rep["modalities"]["lidar"]["in_domain"]
    assert rep["modalities"]["camera"]["medians"] == {"width": 320.0, "height": 240.0, "hfov_deg": 90.0}


def test_doctor_on_a_simulated_bag_with_the_training_sensors(capsys, tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path / "sim"), "--seed", "1003", "--duration", "12", "--sessions", "1",
                 "--config", str(REPO / "config" / "sim_train.yaml")]) == 0
    capsys.readouterr()
    assert main(["doctor", str(tmp_path / "sim" / "session_00"), "--models", str(MODELS)]) == 0
    text = capsys.readouterr().out
    assert text.count("in domain") == 3 and "verdict: IN DOMAIN" in text and "next step: the shipped encoders" in text


def test_doctor_calls_real_pjlab_frames_out_of_domain(capsys, tmp_path: Path) -> None:
    from cmr_fusion_ros.bag.importers import import_pjlab
    from tests.unit.test_import_pjlab import _calib_json

    T = np.array([[0.999876, 0.0157073, 0, 2.2728], [-0.0157073, 0.999876, 0, 0.47596], [0, 0, 1, -1.06], [0, 0, 0, 1]])
    bag = import_pjlab(tmp_path / "bag", lidar=REAL / "pjlab-sensorscalib" / "lidar.pcd",
                       radar=REAL / "pjlab-sensorscalib" / "front_radar_delphi.csv",
                       radar_to_lidar=_calib_json(tmp_path / "r2l.json", "x", T)).path
    assert main(["doctor", str(bag), "--models", str(MODELS)]) == 1
    text = capsys.readouterr().out
    # the LiDAR's statistics (94,820 points, ground at -2.2 m, -25..11 deg) lie within the drawn training rigs'; the
    # Delphi radar's 402 points and 170 m ranges do not
    assert "lidar: in domain" in text and "radar: OUT OF DOMAIN" in text and "points 402 outside" in text
    assert "range_p95_m 170.2 m outside" in text and "mean cosine between frames n/a (fewer than 2 frames" in text
    assert "verdict: OUT OF DOMAIN" in text and "fine-tune the radar encoder(s)" in text
    assert main(["doctor", str(bag), "--models", str(MODELS), "--max-frames", "1"]) == 2
    assert "--max-frames" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_DGP.is_dir(), reason="../shared/data/real/tri-dgp not present")
def test_doctor_calls_real_dgp_scenes_out_of_domain(capsys, tmp_path: Path) -> None:
    assert main(["import", "dgp", str(SHARED_DGP), "--out", str(tmp_path / "dgp")]) == 0
    capsys.readouterr()
    for scene in ("scene_01", "scene_02"):
        assert main(["doctor", str(tmp_path / "dgp" / scene), "--models", str(MODELS)]) == 1
        text = capsys.readouterr().out
        assert "camera: OUT OF DOMAIN" in text and "lidar: OUT OF DOMAIN" in text
        assert "intensity_p95" in text.split("lidar: OUT OF DOMAIN")[1] and "ground_z_m" in text
        assert "hfov_deg" in text.split("camera: OUT OF DOMAIN")[1]
