"""The ego vehicle's route: a closed loop around a rectangle of blocks, driven in the right-hand lane.

Every lap passes the same places, so a drive longer than one lap revisits; every session drives the same loop (from a
different starting point, at a slightly different speed), so sessions overlap. Corners are quarter circles, so heading
and yaw rate are continuous except where a straight meets an arc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr_fusion_ros.sim.config import RouteConfig
from cmr_fusion_ros.sim.town import Town

__all__ = ["EgoState", "Loop", "SpeedProfile", "make_loop", "session_shift"]


@dataclass(frozen=True)
class EgoState:
    """Pose and twist of base_link at one instant (world frame = odom)."""

    t: float
    x: float
    y: float
    yaw: float
    speed: float  # forward speed, m/s (base_link x)
    yaw_rate: float  # rad/s about z

    @property
    def velocity(self) -> np.ndarray:
        return np.array([self.speed * np.cos(self.yaw), self.speed * np.sin(self.yaw), 0.0])


@dataclass(frozen=True)
class Loop:
    s: np.ndarray  # arc length samples
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # unwrapped
    curvature: np.ndarray
    blocks: tuple[int, int, int, int]  # i0, j0, i1, j1 (street indices of the rectangle)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, s: float) -> tuple[float, float, float, float]:
        """x, y, yaw (wrapped to (-pi, pi]), curvature at arc length s (taken modulo the loop length)."""
        s = float(s) % self.length
        x = float(np.interp(s, self.s, self.x))
        y = float(np.interp(s, self.s, self.y))
        yaw = float(np.interp(s, self.s, self.yaw))
        k = float(self.curvature[min(np.searchsorted(self.s, s), len(self.s) - 1)])
        return x, y, float(np.arctan2(np.sin(yaw), np.cos(yaw))), k


def session_shift(route: RouteConfig, town: Town, session: int) -> tuple[int, int]:
    """Blocks by which session `session`'s loop is moved from the central one: 0, +1, -1, 0, +1, ... along the loop's
    longer side (so the loops share the streets in between, driven in the same direction); none for square loops,
    whose shifted copies would only share streets driven the other way, or without `route.shift_sessions`."""
    if not route.shift_sessions or route.loop_blocks_x == route.loop_blocks_y:
        return (0, 0)
    step = (0, 1, -1)[session % 3]
    nbx, nby = len(town.street_x) - 1, len(town.street_y) - 1
    if route.loop_blocks_x > route.loop_blocks_y:
        i0 = (nbx - route.loop_blocks_x) // 2
        return (step if 0 <= i0 + step <= nbx - route.loop_blocks_x else 0, 0)
    j0 = (nby - route.loop_blocks_y) // 2
    return (0, step if 0 <= j0 + step <= nby - route.loop_blocks_y else 0)


def make_loop(town: Town, route: RouteConfig, *, shift: tuple[int, int] = (0, 0), corner_radius: float = 7.0,
              step: float = 0.05) -> Loop:
    """The rectangle of ``route.loop_blocks_x × loop_blocks_y`` blocks nearest the town centre (moved by `shift`
    blocks), driven counter-clockwise."""
    nbx, nby = len(town.street_x) - 1, len(town.street_y) - 1
    i0 = (nbx - route.loop_blocks_x) // 2 + shift[0]
    j0 = (nby - route.loop_blocks_y) // 2 + shift[1]
    if not (0 <= i0 <= nbx - route.loop_blocks_x and 0 <= j0 <= nby - route.loop_blocks_y):
        raise ValueError(f"loop shifted by {shift} leaves the town")
    i1, j1 = i0 + route.loop_blocks_x, j0 + route.loop_blocks_y
    lo = town.lane_offset
    # counter-clockwise driving, right-hand traffic: the lane is outside the rectangle of centre lines
    xa, xb = town.street_x[i0] - lo, town.street_x[i1] + lo
    ya, yb = town.street_y[j0] - lo, town.street_y[j1] + lo
    r = corner_radius
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def straight(x0: float, y0: float, x1: float, y1: float) -> None:
        n = max(2, int(np.hypot(x1 - x0, y1 - y0) / step))
        u = np.linspace(0, 1, n, endpoint=False)
        yaw = np.arctan2(y1 - y0, x1 - x0)
        pieces.append((x0 + u * (x1 - x0), y0 + u * (y1 - y0), np.full(n, yaw), np.zeros(n)))

    def arc(cx: float, cy: float, a0: float) -> None:
        n = max(2, int(r * np.pi / 2 / step))
        a = a0 + np.linspace(0, np.pi / 2, n, endpoint=False)
        pieces.append((cx + r * np.cos(a), cy + r * np.sin(a), a + np.pi / 2, np.full(n, 1.0 / r)))

    straight(xa + r, ya, xb - r, ya)  # east along the south side
    arc(xb - r, ya + r, -np.pi / 2)
    straight(xb, ya + r, xb, yb - r)  # north
    arc(xb - r, yb - r, 0.0)
    straight(xb - r, yb, xa + r, yb)  # west
    arc(xa + r, yb - r, np.pi / 2)
    straight(xa, yb - r, xa, ya + r)  # south
    arc(xa + r, ya + r, np.pi)
    x = np.concatenate([p[0] for p in pieces] + [[xa + r]])
    y = np.concatenate([p[1] for p in pieces] + [[ya]])
    yaw = np.unwrap(np.concatenate([p[2] for p in pieces] + [[2 * np.pi]]))
    k = np.concatenate([p[3] for p in pieces] + [[0.0]])
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    return Loop(s, x, y, yaw, k, (i0, j0, i1, j1))


@dataclass(frozen=True)
class SpeedProfile:
    """s(t) = s0 + v0 t + a slow sinusoidal speed modulation (period `period` seconds)."""

    s0: float
    v0: float
    amplitude: float  # relative
    period: float = 23.0
    phase: float = 0.0

    def speed(self, t: float) -> float:
        return self.v0 * (1.0 + self.amplitude * np.sin(2 * np.pi * t / self.period + self.phase))

    def distance(self, t: float) -> float:
        w = 2 * np.pi / self.period
        return self.s0 + self.v0 * t - self.v0 * self.amplitude / w * (np.cos(w * t + self.phase) - np.cos(self.phase))

    def state(self, loop: Loop, t: float) -> EgoState:
        x, y, yaw, k = loop.at(self.distance(t))
        v = float(self.speed(t))
        return EgoState(float(t), x, y, yaw, v, v * k)
