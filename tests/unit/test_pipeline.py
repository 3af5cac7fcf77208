"""The fusion pipeline with stand-in encoders: frame by frame, search before insert, cross-modal revisits, poses,
query ids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import EmbeddingInput, FusionPipeline, PipelineOutput, embedding_views
from cmr_fusion_ros.core.policy import PolicyConfig
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.decode import Frame
from cmr_fusion_ros.core.types import Modality, Pose

S = 1_000_000_000
C, L, R = Modality.CAMERA, Modality.LIDAR, Modality.RADAR


class PlaceEncoder:
    """Stand-in encoder: the frame's data is a place number; every modality embeds a place to the same vector."""

    dim = 32

    def __init__(self, noise: float = 0.05, seed: int = 0):
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def encode(self, items):
        self.calls += 1
        out = []
        for place in items:
            v = np.random.default_rng(int(place)).normal(size=self.dim) + self.noise * self.rng.normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


def make(config=None, poses=True):
    cfg = config or FusionConfig.from_dict({
        "session": "s0",
        "memory": {"dim": 32, "admission": {"enabled": False}},
        "policy": {"min_score": 0.8, "exclude_recent_s": 20.0, "debounce_s": 5.0, "top_k": 3},
    })
    buf = PoseBuffer() if poses else None
    enc = {m: PlaceEncoder(seed=i) for i, m in enumerate(Modality)}
    return FusionPipeline(cfg, enc, SceneMemory(cfg.memory), poses=buf), buf


def frames(t_s: float, place: int, mods=(C, L, R)) -> list[Frame]:
    t = round(t_s * S)
    return [Frame(m, f"/{m.value}", f"{m.value}_frame", t, data=place) for m in mods]


def process(pipe, frames_: list[Frame]) -> PipelineOutput:
    """Each frame alone, one after the other; the outputs joined."""
    outs = [pipe.process_frame(f) for f in frames_]
    return PipelineOutput(outs[0].stamp_ns, outs[0].frame_id, tuple(e for o in outs for e in o.events),
                          tuple(p for o in outs for p in o.frames))


def drive(pipe, buf, schedule):
    """schedule: (t_s, place, x) tuples; poses at x metres along a line."""
    outs = []
    for t_s, place, x in schedule:
        if buf is not None:
            buf.add(round(t_s * S), Pose(x=float(x)))
        outs.append(process(pipe, frames(t_s, place)))
    return outs


def test_first_pass_has_no_matches_and_every_frame_is_remembered():
    pipe, buf = make()
    outs = drive(pipe, buf, [(t, t, 10 * t) for t in range(10)])
    assert all(not o.events for o in outs)
    assert len(pipe.memory) == 30
    ids = [p.entry_id for o in outs for p in o.frames]
    assert ids == sorted(ids) and 0 not in ids


def test_revisit_matches_other_modalities_of_the_same_place():
    pipe, buf = make()
    drive(pipe, buf, [(t, t, 10 * t) for t in range(10)])
    out = drive(pipe, buf, [(100, 4, 41.0)])[0]
    pairs = {(e.query_modality, e.match_modality) for e in out.events}
    assert pairs == {(q, m) for q in Modality for m in Modality if q != m}  # default routes: every other modality
    for q in Modality:  # per query: both other modalities found, ranked best first
        assert sorted(e.rank for e in out.events if e.query_modality == q) == [0, 1]
    for e in out.events:
        assert e.score > 0.9
        assert e.match_stamp_ns == 4 * S and e.query_stamp_ns == 100 * S
        assert e.query_id > 0 and e.match_id > 0 and e.query_id != e.match_id
        assert e.distance == pytest.approx(1.0)
        assert e.match_topic == f"/{e.match_modality.value}"


def test_no_self_match_within_the_recent_window_and_debounce():
    pipe, buf = make()
    drive(pipe, buf, [(0, 1, 0.0)])
    # same place 2 s later: too recent (exclude_recent_s = 20)
    assert drive(pipe, buf, [(2, 1, 0.0)])[0].events == ()
    # revisit at t=30, then again at t=31 (debounced: one event per revisit), then at t=40 (debounce expired)
    first, second = drive(pipe, buf, [(30, 1, 0.0), (31, 1, 0.0)])
    assert len(first.events) == 6 and second.events == ()
    assert len(drive(pipe, buf, [(40, 1, 0.0)])[0].events) == 6


def test_without_odometry_poses_are_unknown_and_distance_nan():
    pipe, _ = make(poses=False)
    drive(pipe, None, [(0, 3, 0)])
    out = drive(pipe, None, [(50, 3, 0)])[0]
    assert out.events and all(e.query_pose is None and math.isnan(e.distance) for e in out.events)


def test_one_frame_and_embeddings_path():
    pipe, buf = make()
    buf.add(0, Pose(x=0.0))
    out = pipe.process_frame(frames(0, 7, mods=(L,))[0])
    assert [p.modality for p in out.frames] == [L] and out.frames[0].entry_id == 1
    vec = PlaceEncoder(noise=0.0).encode([7])[0]
    buf.add(60 * S, Pose(x=3.0))
    out = pipe.process_embeddings([EmbeddingInput(C, "/cam", "cam", 60 * S, vec)])
    assert [(e.query_modality, e.match_modality) for e in out.events] == [(C, L)]
    assert out.events[0].distance == pytest.approx(3.0)


def test_dimension_mismatch_is_a_config_error():
    cfg = FusionConfig.from_dict({"memory": {"dim": 16}})
    with pytest.raises(ConfigError, match=r"memory.dim.*camera encoder's embedding size 32"):
        FusionPipeline(cfg, {C: PlaceEncoder()}, SceneMemory(cfg.memory))


def test_run_time_policy_change_keeps_working():
    pipe, buf = make()
    drive(pipe, buf, [(0, 2, 0.0)])
    stricter = FusionConfig.from_dict({"policy": {"min_score": 1.0, "exclude_recent_s": 20.0}}).policy
    pipe.set_policy(stricter)
    assert drive(pipe, buf, [(50, 2, 0.0)])[0].events == ()
    assert pipe.config.policy.min_score == 1.0


def test_configured_limits_reject_a_message_the_defaults_accept():
    from cmr_fusion_ros.core.errors import ConversionError
    from cmr_fusion_ros.core.decode import frame_from
    from tests.unit import stress_messages as sm

    small = FusionConfig.from_dict({"limits": {"max_points": 10, "max_image_pixels": 63}})
    for m, msg, compressed in ((L, sm.cloud_of(L, 3), False), (R, sm.cloud_of(R, 3), False),
                               (C, sm.image_of(1), False), (C, sm.compressed_of(1, "jpeg"), True)):
        sc = FusionConfig().stream(m)
        ok = frame_from(m, f"/{m.value}", msg, compressed=compressed, radar_fields=sc.radar_fields, stamp_ns=S,
                        limits=FusionConfig().limits)
        assert ok.stamp_ns == S
        with pytest.raises(ConversionError, match="limit|allowed 0..10"):  # the typed error nodes count as bad
            frame_from(m, f"/{m.value}", msg, compressed=compressed, radar_fields=sc.radar_fields, stamp_ns=S,
                       limits=small.limits)


def _jumps(time_jump_s: float, back_s: float) -> tuple[int, int, bool]:
    """Process frames at 100 s, then frames and an embedding ``back_s`` earlier; also poses: (frame jumps,
    embedding jumps, pose jump)."""
    cfg = FusionConfig.from_dict({"memory": {"dim": 32}, "sync": {"time_jump_s": time_jump_s}})
    pipe, buf = make(cfg)
    process(pipe, frames(100, 1))
    process(pipe, frames(100 - back_s, 2))
    set_jumps = pipe.time_jumps
    for t_s, place in ((200, 3), (200 - back_s, 4)):
        pipe.process_embeddings([EmbeddingInput(C, "/cam", "cam", round(t_s * S), PlaceEncoder().encode([place])[0])])
    pipe.add_pose(300 * S, Pose(x=0.0))
    return set_jumps, pipe.time_jumps - set_jumps, pipe.add_pose(round((300 - back_s) * S), Pose(x=1.0))


def test_configured_time_jump_threshold():
    # automatic (0): 1 s
    assert make()[0].jump_back_ns == 1_000_000_000
    assert _jumps(0.0, 0.9) == (0, 0, False)
    assert _jumps(0.0, 2.0) == (1, 1, True)
    # a longer threshold: going back 2 s is reordering, not a new time line; 6 s is
    assert _jumps(5.0, 2.0) == (0, 0, False)
    assert _jumps(5.0, 6.0) == (1, 1, True)
    # a shorter one: 0.5 s back is a jump
    assert _jumps(0.3, 0.5) == (1, 1, True)
    assert _jumps(0.3, 0.2) == (0, 0, False)


class FlatEncoder:
    """Stand-in LiDAR encoder with the real preprocessing: the embedding is the flattened, normalised tensor."""

    def __init__(self):
        from cmr_fusion_ros.core.preprocess import LidarBevFrontPreprocessing

        self.preprocessing = LidarBevFrontPreprocessing(rows=8, half_extent_m=40.0, fv_cols=8, fv_rows=8)
        self.dim = int(np.prod(self.preprocessing.input_shape))
        self.batches: list[int] = []

    def encode_tensors(self, x):
        self.batches.append(len(x))
        v = np.asarray(x, np.float64).reshape(len(x), -1) + 1e-3
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def encode(self, items):
        return self.encode_tensors(np.stack([self.preprocessing(i) for i in items]))


def _lidar_pipe(views: int, routes) -> tuple[FusionPipeline, FlatEncoder]:
    enc = FlatEncoder()
    cfg = FusionConfig.from_dict({
        "session": "s0", "encoders": {"lidar_views": views},
        "memory": {"dim": enc.dim, "admission": {"enabled": False}},
        "policy": {"min_score": 0.98, "exclude_recent_s": 20.0, "routes": routes, "turned_view_penalty": 0.01},
    })
    return FusionPipeline(cfg, {L: enc}, SceneMemory(cfg.memory)), enc


def _lidar_frame(t_s: float, points: np.ndarray) -> Frame:
    return Frame(L, "/lidar", "lidar_frame", round(t_s * S), data=points)


def test_lidar_views_find_a_place_driven_in_another_direction():
    rng = np.random.default_rng(5)
    scan = np.column_stack([rng.uniform(-38, 38, (400, 2)), rng.uniform(-2, 6, 400), rng.uniform(0, 255, 400)])
    scan = scan.astype(np.float32)
    right = scan.copy()  # the same place, the sensor turned right by 90 deg
    right[:, 0], right[:, 1] = -scan[:, 1], scan[:, 0]
    pipe, enc = _lidar_pipe(4, {"lidar": ["lidar"]})
    assert pipe.process_frame(_lidar_frame(0.0, scan)).events == ()
    out = pipe.process_frame(_lidar_frame(60.0, right))
    [ev] = out.events
    assert ev.match_id == 1 and ev.score == pytest.approx(0.99, abs=1e-6)  # found by a turned view: - penalty
    assert enc.batches == [4, 4]  # every scan encoded at 4 headings in one batch
    # only the scan as it is went into the memory
    as_is = enc.encode_tensors(enc.preprocessing(right)[None])[0]
    np.testing.assert_allclose(pipe.memory.get(2).vector, as_is, atol=1e-6)
    # one view: the turned scan is not recognised
    pipe, enc = _lidar_pipe(1, {"lidar": ["lidar"]})
    pipe.process_frame(_lidar_frame(0.0, scan))
    assert pipe.process_frame(_lidar_frame(60.0, right)).events == () and enc.batches == [1, 1]
    # LiDAR queries that do not search LiDAR entries are encoded once (routes may change at run time)
    pipe, enc = _lidar_pipe(4, {"lidar": ["camera"]})
    pipe.process_frame(_lidar_frame(0.0, scan))
    routes = {"lidar": ["lidar"]}
    pipe.set_policy(PolicyConfig.from_dict({"min_score": 0.98, "exclude_recent_s": 20.0, "routes": routes,
                                            "turned_view_penalty": 0.01}))
    assert len(pipe.process_frame(_lidar_frame(60.0, right)).events) == 1 and enc.batches == [1, 4]
    assert pipe.lidar_views() == 4
    pipe.set_policy(PolicyConfig.from_dict({"routes": {"lidar": ["camera"]}}))
    assert pipe.lidar_views() == 1


def test_embedding_views_from_a_message_field():
    assert embedding_views([], 4) is None
    v = embedding_views(np.arange(8, dtype=np.float32), 4)
    assert v.shape == (2, 4) and v[1, 0] == 4.0
    with pytest.raises(ConversionError, match="views.*5 values are not whole views of the vector's 4 values"):
        embedding_views([1.0] * 5, 4)
    with pytest.raises(ConversionError, match="views"):
        embedding_views([1.0] * 4, 0)
