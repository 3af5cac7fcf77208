"""A recording session: the ego drives the loop for `duration` seconds while every sensor fires at its rate.

:func:`simulate_session` yields :class:`Sample` objects in time order (ties in a fixed sensor order). Everything is a
pure function of (seed, session index, config): noise draws use one generator per (sensor, frame index), so the
output does not depend on iteration order, threads or the machine.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmr_fusion_ros.sim.config import SimConfig
from cmr_fusion_ros.sim.geometry import RigidTransform
from cmr_fusion_ros.sim.rig import draw_rig
from cmr_fusion_ros.sim.route import EgoState, Loop, SpeedProfile, make_loop, session_shift
from cmr_fusion_ros.sim.sensors import CAMERA_FRAME, LIDAR_FRAME, RADAR_FRAME, CameraModel, LidarModel, RadarModel
from cmr_fusion_ros.sim.town import Town, generate_town
from cmr_fusion_ros.sim.world import SessionWorld

__all__ = ["EPOCH_NS", "SESSION_SPACING_NS", "Sample", "SensorKind", "SessionPlan", "plan_session", "session_epoch_ns",
           "simulate_session"]

EPOCH_NS = 1_750_000_000 * 10**9  # session 0 starts here (2025-06-15T15:06:40Z)
SESSION_SPACING_NS = 3 * 3600 * 10**9  # session k starts k * 3 h later


def session_epoch_ns(session: int) -> int:
    return EPOCH_NS + int(session) * SESSION_SPACING_NS


class SensorKind(enum.IntEnum):
    """Also the order of samples that share a stamp."""

    ODOM = 0
    LIDAR = 1
    CAMERA = 2
    RADAR = 3


@dataclass(frozen=True)
class Sample:
    kind: SensorKind
    index: int  # frame index within its sensor stream
    stamp_ns: int
    state: EgoState  # ego state at the stamp
    data: Any = None  # image (H, W, 3) uint8 | structured points | None for odom


@dataclass
class SessionPlan:
    """Everything a session needs, built once: the world, the sensors, the route and the schedule."""

    seed: int
    session: int
    config: SimConfig
    town: Town
    world: SessionWorld
    loop: Loop
    speed: SpeedProfile
    camera: CameraModel
    lidar: LidarModel
    radar: RadarModel
    epoch_ns: int
    duration: float
    schedule: list[tuple[int, SensorKind, int]] = field(default_factory=list)  # (stamp_ns, kind, index)

    @property
    def extrinsics(self) -> dict[str, RigidTransform]:
        """base_link <- sensor frame, per sensor frame id."""
        return {LIDAR_FRAME: self.lidar.extrinsic, RADAR_FRAME: self.radar.extrinsic, CAMERA_FRAME: self.camera.extrinsic}

    def state_at(self, stamp_ns: int) -> EgoState:
        return self.speed.state(self.loop, (stamp_ns - self.epoch_ns) / 1e9)

    def counts(self) -> dict[SensorKind, int]:
        out = {k: 0 for k in SensorKind}
        for _, kind, _ in self.schedule:
            out[kind] += 1
        return out


def _stamps(rate_hz: float, duration: float) -> list[int]:
    n = int(np.floor(duration * rate_hz + 1e-6))
    return [int(round(k * 1e9 / rate_hz)) for k in range(n)]


def plan_session(seed: int, session: int, duration: float, config: SimConfig | None = None,
                 town: Town | None = None) -> SessionPlan:
    cfg = draw_rig(config or SimConfig(), seed, session)  # rig.draw: this session's own sensors
    town = town if town is not None else generate_town(seed, cfg.town)
    world_rng = np.random.default_rng([int(seed), int(session), 1])
    world = SessionWorld(town, world_rng, moving_cars=cfg.town.moving_cars, pedestrians=cfg.town.pedestrians,
                         parked_fill=cfg.town.parked_car_fill, shadows=cfg.camera.shadows,
                         lighting=cfg.camera.lighting)
    loop = make_loop(town, cfg.route, shift=session_shift(cfg.route, town, session))
    route_rng = np.random.default_rng([int(seed), int(session), 2])
    speed = SpeedProfile(
        s0=float(route_rng.uniform(0.0, loop.length)),
        v0=float(cfg.route.speed * route_rng.uniform(0.92, 1.08)),
        amplitude=cfg.route.speed_variation,
        phase=float(route_rng.uniform(0, 2 * np.pi)),
    )
    epoch = session_epoch_ns(session)
    schedule: list[tuple[int, SensorKind, int]] = []
    for kind, rate in ((SensorKind.ODOM, cfg.odom.rate_hz), (SensorKind.LIDAR, cfg.lidar.rate_hz),
                       (SensorKind.CAMERA, cfg.camera.rate_hz), (SensorKind.RADAR, cfg.radar.rate_hz)):
        schedule += [(epoch + off, kind, i) for i, off in enumerate(_stamps(rate, duration))]
    schedule.sort()
    return SessionPlan(int(seed), int(session), cfg, town, world, loop, speed, CameraModel(cfg.camera),
                       LidarModel(cfg.lidar), RadarModel(cfg.radar), epoch, float(duration), schedule)


def simulate_session(plan: SessionPlan) -> Iterator[Sample]:
    """Render the plan's schedule, one sample at a time, in time order."""
    for stamp, kind, index in plan.schedule:
        state = plan.state_at(stamp)
        if kind == SensorKind.ODOM:
            yield Sample(kind, index, stamp, state)
            continue
        rng = np.random.default_rng([plan.seed, plan.session, int(kind), index])
        if kind == SensorKind.CAMERA:
            data = plan.camera.render(plan.world, state, rng)
        elif kind == SensorKind.LIDAR:
            data = plan.lidar.render(plan.world, state, rng)
        else:
            data = plan.radar.render(plan.world, state, rng)
        yield Sample(kind, index, stamp, state, data)
