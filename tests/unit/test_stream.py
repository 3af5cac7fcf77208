"""The stream runner: frame by frame, streams concurrently without waiting on each other, the same events as one
thread, and the wait for the odometry that interpolates a frame's stamp."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.stream import StreamRunner
from cmr_fusion_ros.core.types import Modality, Pose
from tests.unit import stress_messages as sm
from tests.unit.test_pipeline import PlaceEncoder

S = 1_000_000_000
L, R = Modality.LIDAR, Modality.RADAR
TOPICS = {"/lidar/points": L, "/radar/points": R}


class CloudPlaceEncoder(PlaceEncoder):
    """The cloud's mean x is the place number; ``gate`` (an Event) holds every encode until it is set."""

    def __init__(self, gate: threading.Event | None = None, **kw):
        super().__init__(**kw)
        self.gate = gate

    def encode(self, items):
        if self.gate is not None:
            assert self.gate.wait(10.0), "the gate never opened"
        return super().encode([round(float(np.mean(c["x"]))) for c in items])


def cloud(place: int, stamp_ns: int, radar: bool = False):
    """A PointCloud2-like message at place ``place`` with a header stamp as rclpy and rosbags give it."""
    msg = sm.cloud_of(R if radar else L, place)
    msg.header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S), frame_id="sensor")
    return msg


def make(encoders, poses=None):
    cfg = FusionConfig.from_dict({"session": "s", "streams": {"camera": {"enabled": False}},
                                  "memory": {"dim": 32, "admission": {"enabled": False}},
                                  "policy": {"min_score": 0.8, "exclude_recent_s": 20.0, "debounce_s": 5.0}})
    pipe = FusionPipeline(cfg, encoders, SceneMemory(cfg.memory), poses=poses)
    return StreamRunner(pipe, cfg, TOPICS)


SCHEDULE = [(t, t) for t in range(12)] + [(40 + k, 2 + k) for k in range(5)]  # (t_s, place): a drive, a revisit


def events(out):
    return {(e.query_modality, e.match_modality, e.query_stamp_ns, e.match_stamp_ns) for e in out.events}


def test_streams_in_threads_give_the_events_of_one_thread():
    one = make({L: CloudPlaceEncoder(seed=1), R: CloudPlaceEncoder(seed=2)})
    expected = set()
    for t, place in SCHEDULE:
        for topic, radar in (("/lidar/points", False), ("/radar/points", True)):
            expected |= events(one.process(topic, cloud(place, t * S, radar)).output)
    assert len(expected) == 2  # LiDAR -> radar and radar -> LiDAR at the revisit (then debounced)

    # the two streams in their own threads, each frame of an instant processed concurrently with the other's (as
    # live: streams run in real time, so they are never far apart; a query only finds entries older than
    # policy.exclude_recent_s)
    runner = make({L: CloudPlaceEncoder(seed=1), R: CloudPlaceEncoder(seed=2)})
    got, lock, step = set(), threading.Lock(), threading.Barrier(2, timeout=10.0)

    def stream(topic, radar):
        for t, place in SCHEDULE:
            step.wait()
            out = runner.process(topic, cloud(place, t * S, radar)).output
            with lock:
                got.update(events(out))

    threads = [threading.Thread(target=stream, args=a) for a in (("/lidar/points", False), ("/radar/points", True))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30.0)
    assert got == expected and len(runner.pipeline.memory) == 2 * len(SCHEDULE)
    assert runner.pipeline.time_jumps == 0


def test_a_slow_stream_does_not_hold_up_another():
    """The LiDAR encoder is held until the radar frame behind it is done: with one queue for both (or a wait for
    the LiDAR scan of the same moment) the radar frame could never finish and the gate would time out."""
    gate = threading.Event()
    runner = make({L: CloudPlaceEncoder(gate), R: CloudPlaceEncoder()})
    lidar = threading.Thread(target=runner.process, args=("/lidar/points", cloud(1, S)))
    lidar.start()
    time.sleep(0.05)  # the LiDAR scan is in its encoder now
    done = runner.process("/radar/points", cloud(1, S, radar=True))
    assert done.output.frames[0].entry_id == 1 and lidar.is_alive()  # radar went first, LiDAR still encoding
    gate.set()
    lidar.join(10.0)
    assert not lidar.is_alive() and len(runner.pipeline.memory) == 2


def test_a_frame_waits_for_the_odometry_that_interpolates_it():
    poses = PoseBuffer(max_extrapolation_ns=200_000_000)
    runner = make({L: CloudPlaceEncoder()}, poses)
    runner.pipeline.add_pose(10 * S, Pose(x=0.0))
    late = threading.Timer(0.1, lambda: runner.pipeline.add_pose(10 * S + 100_000_000, Pose(x=1.0)))
    late.start()
    out = runner.process("/lidar/points", cloud(1, 10 * S + 50_000_000))  # between the pose we have and the next
    late.join()
    assert runner.pipeline.memory.get(out.output.frames[0].entry_id).pose.x == pytest.approx(0.5)  # interpolated
    # odometry far behind (stopped): no wait, no pose
    t0 = time.monotonic()
    out = runner.process("/lidar/points", cloud(2, 20 * S))
    assert time.monotonic() - t0 < 0.15 and not out.output.frames[0].has_pose
    # just behind but it never comes: the wait ends after odometry.max_extrapolation_s, the pose is extrapolated
    assert poses.behind(10 * S + 200_000_000) and not poses.wait_past(10 * S + 200_000_000, 0.01)
