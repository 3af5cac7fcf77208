"""Multi-scan radar: moving points between planar poses, the scan accumulator on hand-made motion, the card round
trip, and the training, evaluation and runtime paths giving the same merged tensors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.core.accumulate import ScanAccumulator, move_points
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.preprocess import RadarBevPreprocessing, preprocessing_from_dict
from cmr_fusion_ros.core.radar import RADAR_DTYPE
from cmr_fusion_ros.core.decode import Frame
from cmr_fusion_ros.core.types import Modality, Pose

S = 1_000_000_000


def pose(x: float, y: float = 0.0, yaw: float = 0.0) -> Pose:
    return Pose(x=x, y=y, qz=math.sin(yaw / 2), qw=math.cos(yaw / 2))


def scan(xs, ys, rcs=0.0) -> np.ndarray:
    a = np.zeros(len(xs), RADAR_DTYPE)
    a["x"], a["y"], a["rcs"] = xs, ys, rcs
    return a


def world_scan(world: np.ndarray, p: Pose, rcs: float) -> np.ndarray:
    """The static ``world`` points (N, 2) as seen from pose ``p``."""
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    d = world - np.array([p.x, p.y])
    return scan(c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], rcs)


def test_move_points_hand_made() -> None:
    pts = scan([5.0, 1.0], [0.0, 0.0])
    got = move_points(pts, (10.0, 0.0, 0.0), (12.0, 0.0, 0.0))  # 2 m further along x: things are 2 m closer
    np.testing.assert_allclose(got["x"], [3.0, -1.0], atol=1e-6)
    got = move_points(pts, (0.0, 0.0, 0.0), (0.0, 0.0, math.pi / 2))  # turned left: ahead becomes right (-y)
    np.testing.assert_allclose(np.c_[got["x"], got["y"]], [[0, -5], [0, -1]], atol=1e-6)
    plain = np.array([[5.0, 0.0, 1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(move_points(plain, (0, 0, 0), (0, 0, math.pi / 2)), [[0, -5, 1, 2, 3]], atol=1e-6)
    assert pts["x"][0] == 5.0  # input untouched


def test_static_world_lines_up_and_scans_are_chosen_by_time_not_count() -> None:
    world = np.array([[30.0, 2.0], [45.0, -5.0], [60.0, 8.0]])

    def run(rate_hz: float) -> tuple[np.ndarray, ScanAccumulator]:
        acc = ScanAccumulator(3, 0.5, 0.15)
        out = None
        for i in range(int(2.0 * rate_hz) + 1):
            t = i / rate_hz
            p = pose(10.0 * t, 0.5 * t, 0.2 * t)  # driving and turning
            out = acc.merge(round(t * S), world_scan(world, p, rcs=t), p)
        return out, acc

    for rate in (2.0, 10.0):
        out, acc = run(rate)
        assert len(out) == 9  # the scan at 2.0 s + those at 1.5 s and 1.0 s
        np.testing.assert_allclose(sorted(out["rcs"]), [1.0] * 3 + [1.5] * 3 + [2.0] * 3, atol=1e-9)
        now = world_scan(world, pose(20.0, 1.0, 0.4), 0.0)
        for k in range(3):  # every merged scan lands on the static points as seen now
            np.testing.assert_allclose(out["x"][3 * k: 3 * k + 3], now["x"], atol=1e-4)
            np.testing.assert_allclose(out["y"][3 * k: 3 * k + 3], now["y"], atol=1e-4)
        # the first second has no full history: at 2 Hz the scan at 0 s finds none, at 0.5 s one; at 10 Hz (targets
        # within 0.15 s) the scans at 0.0-0.3 s find none, those at 0.4-0.8 s one
        assert acc.missing_scans == (2 + 1 if rate == 2.0 else 4 * 2 + 5 * 1)
        assert len(acc) <= (3 if rate == 2.0 else 13)  # older scans are dropped


def test_accumulator_edge_cases() -> None:
    acc = ScanAccumulator(3, 0.5, 0.15)
    a = scan([1.0], [0.0])
    assert acc.merge(0, a, None) is a and len(acc) == 0 and acc.unposed_scans == 1  # no pose: alone, not kept
    acc.merge(0, a, pose(0))
    acc.merge(S // 2, a, pose(5))
    assert len(acc.merge(S, a, pose(10))) == 3
    acc.reset()
    assert len(acc) == 0 and len(acc.merge(2 * S, a, pose(20))) == 1
    # a scan far outside the tolerance is not used
    acc = ScanAccumulator(2, 0.5, 0.1)
    acc.merge(0, a, pose(0))
    assert len(acc.merge(S * 7 // 10, a, pose(7))) == 1 and acc.missing_scans == 2
    assert ScanAccumulator(1, 0.5, 0.1).merge(0, a, pose(0)) is a
    for args, key in (((0, 0.5, 0.1), "radar.scans"), ((3, 0.0, 0.1), "radar.scan_spacing_s"),
                      ((3, 0.5, 0.5), "radar.scan_tolerance_s"), ((True, 0.5, 0.1), "radar.scans")):
        with pytest.raises(ConfigError, match=key):
            ScanAccumulator(*args)


def test_card_round_trip_and_single_scan_cards_unchanged() -> None:
    single = RadarBevPreprocessing()
    assert "scans" not in single.to_dict()["params"] and single.accumulator() is None
    multi = RadarBevPreprocessing(scans=3, scan_spacing_s=0.4, scan_tolerance_s=0.1)
    d = multi.to_dict()
    assert d["params"]["scans"] == 3 and d["params"]["scan_spacing_s"] == 0.4
    again = preprocessing_from_dict(d)
    assert again == multi and isinstance(again.accumulator(), ScanAccumulator)
    with pytest.raises(ConfigError, match="radar.scan_tolerance_s"):
        RadarBevPreprocessing(scans=3, scan_spacing_s=0.1, scan_tolerance_s=0.2)


class RecordingEncoder:
    """Stand-in ONNX encoder: real preprocessing, records the tensors it is given."""

    dim = 8

    def __init__(self, pre) -> None:
        self.preprocessing = pre
        self.seen: list[np.ndarray] = []

    def encode_tensors(self, x: np.ndarray) -> np.ndarray:
        self.seen.extend(x)
        v = np.zeros((len(x), self.dim), np.float32)
        v[:, 0] = 1.0
        return v


def test_training_eval_and_runtime_merge_the_same_scans(tmp_path: Path) -> None:
    """frames_from_bag (training), embed_bag (evaluation) and FusionPipeline.process_frame (runtime) give identical
    multi-scan radar tensors on the same bag; a time jump back restarts the history."""
    pytest.importorskip("torch")
    from cmr_fusion_ros.bag.reader import read_samples
    from cmr_fusion_ros.eval.evaluate import embed_bag
    from cmr_fusion_ros.training.dataset import frames_from_bag
    from tests.unit.test_bag_reader import write_bag
    from tests.unit.test_training import SMALL

    bag = tmp_path / "town" / "session_00"
    bag.parent.mkdir()
    write_bag(bag)  # sensors every 0.2 s, driving along x with a turning heading
    pre = dict(SMALL)
    pre[Modality.RADAR] = RadarBevPreprocessing(rows=32, cols=32, x_min_m=0, x_max_m=16, y_half_m=8, scans=3,
                                                scan_spacing_s=0.2, scan_tolerance_s=0.05)
    frames = frames_from_bag(bag, pre)
    single = frames_from_bag(bag, SMALL)
    assert not np.array_equal(frames.tensors[Modality.RADAR], single.tensors[Modality.RADAR])

    rec = RecordingEncoder(pre[Modality.RADAR])
    embed_bag(bag, {Modality.RADAR: rec})
    samples = [s for s in read_samples(bag) if s.modality is Modality.RADAR]
    assert len(rec.seen) == len(samples) == len(frames)
    for i in range(len(frames)):
        np.testing.assert_array_equal(rec.seen[i], frames.tensors[Modality.RADAR][i])

    cfg = FusionConfig.from_dict({"memory": {"dim": 8, "admission": {"enabled": False}}})
    runtime = RecordingEncoder(pre[Modality.RADAR])
    pipe = FusionPipeline(cfg, {Modality.RADAR: runtime}, SceneMemory(cfg.memory), poses=PoseBuffer())
    for _ in range(2):  # the second pass goes back in time: a fresh history, the same tensors again
        for s in samples:
            pipe.add_pose(s.stamp_ns, s.pose)
            pipe.process_frame(Frame(Modality.RADAR, "/radar/points", "radar", s.stamp_ns, s.data))
    assert len(runtime.seen) == 2 * len(frames)
    for i, t in enumerate(runtime.seen):
        np.testing.assert_array_equal(t, frames.tensors[Modality.RADAR][i % len(frames)])
    stats = pipe.accumulation_stats()
    assert pipe.has_accumulation and stats["scans_merged"] > 0 and stats["scans_missing"] > 0  # bag starts: missing
    assert stats["scans_without_pose"] == 0 and pipe.multi_scan_modalities() == [Modality.RADAR]
    # no odometry: every scan alone, counted
    bare = FusionPipeline(cfg, {Modality.RADAR: RecordingEncoder(pre[Modality.RADAR])}, SceneMemory(cfg.memory))
    for s in samples[:3]:
        bare.process_frame(Frame(Modality.RADAR, "/radar/points", "radar", s.stamp_ns, s.data))
    assert bare.accumulation_stats() == {"scans_merged": 0, "scans_missing": 0, "scans_without_pose": 3}


def test_offline_summary_reports_merged_scans() -> None:
    from cmr_fusion_ros.bag.offline import OfflineSummary

    assert not any("radar:" in line for line in OfflineSummary(["b"]).lines())
    lines = OfflineSummary(["b"], radar_scans_merged=40, radar_scans_missing=3).lines()
    assert any(line.endswith("radar: 40 earlier scans merged, 3 not found") for line in lines)
    lines = OfflineSummary(["b"], radar_scans_without_pose=7).lines()
    assert any("0 not found, 7 scans without a pose (used alone)" in line for line in lines)


def test_odometry_scan_merger_follows_poses_and_resets_on_jumps() -> None:
    from cmr_fusion_ros.core.accumulate import OdometryScanMerger

    m = OdometryScanMerger(ScanAccumulator(2, 0.5, 0.15), PoseBuffer(), jump_back_ns=S)
    a = scan([10.0], [0.0])
    assert len(m.merge(0, a)) == 1 and m.accumulator.missing_scans == 0  # no pose yet: alone, not kept
    for i in range(11):
        assert not m.add_pose(i * S // 10, pose(i * 1.0))
    m.merge(0, a)
    got = m.merge(S // 2, a)
    np.testing.assert_allclose(got["x"], [10.0, 5.0], atol=1e-9)  # the earlier scan moved 5 m back
    assert m.add_pose(-5 * S, pose(0.0))  # odometry went back (bag loop): poses and history forgotten
    assert m.time_jumps == 1 and len(m.poses) == 1 and len(m.accumulator) == 0
    m.add_pose(-4 * S, pose(0.0))
    m.merge(-4 * S, a)
    assert len(m.merge(-4 * S - 2 * S, a)) == 1 and m.time_jumps == 2  # scans going back reset the history too
