"""Ground-truth / odometry poses by time: a bounded buffer with interpolation (no ROS).

Positions are interpolated linearly and orientations by normalised quaternion lerp (slerp-accurate for the small
angles between two odometry messages). A stamp outside the buffer by more than ``max_extrapolation_ns``, or
between two samples further apart than ``max_gap_ns``, has no pose (None): a match event then says its pose is
not valid rather than inventing one.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Sequence

import numpy as np

from cmr_fusion_ros.core.types import Pose

__all__ = ["DEFAULT_MAX_EXTRAPOLATION_NS", "DEFAULT_MAX_GAP_NS", "PoseBuffer"]


DEFAULT_MAX_GAP_NS = 1_000_000_000  # odometry.max_gap_s
DEFAULT_MAX_EXTRAPOLATION_NS = 200_000_000  # odometry.max_extrapolation_s


class PoseBuffer:
    """Poses by stamp, thread-safe. ``capacity`` poses are kept (the oldest go first; None: all, for a whole bag)."""

    def __init__(self, capacity: int | None = 100_000, max_gap_ns: int = DEFAULT_MAX_GAP_NS,
                 max_extrapolation_ns: int = DEFAULT_MAX_EXTRAPOLATION_NS) -> None:
        self._stamps: deque[int] = deque(maxlen=capacity)
        self._poses: deque[Pose] = deque(maxlen=capacity)
        self.max_gap_ns = int(max_gap_ns)
        self.max_extrapolation_ns = int(max_extrapolation_ns)
        self._lock = threading.Condition()  # notified when a pose is added

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, pose: Pose) -> None:
        with self._lock:
            if self._stamps and stamp_ns <= self._stamps[-1]:
                if stamp_ns == self._stamps[-1]:
                    self._poses[-1] = pose
                    return
                # out of order: rebuild in order (rare; odometry is normally in order); same stamp replaces
                merged = dict(zip(self._stamps, self._poses))
                merged[stamp_ns] = pose
                items = sorted(merged.items(), key=lambda t: t[0])
                self._stamps.clear()
                self._poses.clear()
                for s, p in items[-(self._stamps.maxlen or len(items)):]:
                    self._stamps.append(s)
                    self._poses.append(p)
                return
            self._stamps.append(stamp_ns)
            self._poses.append(pose)
            self._lock.notify_all()

    @classmethod
    def of(cls, stamps_ns: Sequence[int], poses: Sequence[Pose], **kwargs: int) -> "PoseBuffer":
        """A buffer holding every pose given (any order; a repeated stamp keeps the last pose), no capacity limit."""
        buf = cls(capacity=None, **kwargs)
        for s, p in sorted(dict(zip((int(t) for t in stamps_ns), poses)).items(), key=lambda t: t[0]):
            buf._stamps.append(s)
            buf._poses.append(p)
        return buf

    @property
    def stamps_ns(self) -> np.ndarray:
        """The stamps held, sorted, (N,) int64."""
        with self._lock:
            return np.fromiter(self._stamps, np.int64, len(self._stamps))

    @property
    def positions(self) -> np.ndarray:
        """The positions held, in stamp order, (N, 3) float64."""
        with self._lock:
            return np.asarray([(p.x, p.y, p.z) for p in self._poses], np.float64).reshape(-1, 3)

    def behind(self, stamp_ns: int) -> bool:
        """Whether the odometry is running just behind ``stamp_ns``: the newest pose is older than the stamp, by at
        most ``max_extrapolation_ns`` (so the pose that interpolates the stamp is about to arrive)."""
        with self._lock:
            return self._behind(stamp_ns)

    def _behind(self, stamp_ns: int) -> bool:
        return bool(self._stamps) and stamp_ns - self.max_extrapolation_ns <= self._stamps[-1] < stamp_ns

    def wait_past(self, stamp_ns: int, timeout_s: float) -> bool:
        """While the odometry is :meth:`behind` ``stamp_ns``, wait for it to pass the stamp, at most ``timeout_s``;
        True when it is not behind (any more)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._behind(stamp_ns), timeout_s)

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._poses.clear()

    def lookup(self, stamp_ns: int) -> Pose | None:
        with self._lock:
            n = len(self._stamps)
            if n == 0:
                return None
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < n and self._stamps[i] == stamp_ns:
                return self._poses[i]
            if i == 0:
                return self._poses[0] if self._stamps[0] - stamp_ns <= self.max_extrapolation_ns else None
            if i == n:
                return self._poses[-1] if stamp_ns - self._stamps[-1] <= self.max_extrapolation_ns else None
            t0, t1 = self._stamps[i - 1], self._stamps[i]
            if t1 - t0 > self.max_gap_ns:
                return None
            return _interpolate(self._poses[i - 1], self._poses[i], (stamp_ns - t0) / (t1 - t0))


def _interpolate(a: Pose, b: Pose, w: float) -> Pose:
    qa = np.array([a.qx, a.qy, a.qz, a.qw])
    qb = np.array([b.qx, b.qy, b.qz, b.qw])
    if float(qa @ qb) < 0.0:
        qb = -qb
    q = (1 - w) * qa + w * qb
    q /= np.linalg.norm(q) or 1.0
    return Pose(
        x=a.x + w * (b.x - a.x), y=a.y + w * (b.y - a.y), z=a.z + w * (b.z - a.z),
        qx=float(q[0]), qy=float(q[1]), qz=float(q[2]), qw=float(q[3]),
    )
