"""Multi-scan radar: a scan merged with earlier scans of the same sensor, moved by the odometry (no ROS).

One radar scan is sparse (about 100 returns over a 100 degree front sector); place recognition on radar accumulates
several scans with the ego-motion. :class:`ScanAccumulator` keeps the recent scans of one sensor with their odometry
poses and returns the current scan merged with the earlier scans nearest to ``stamp - k * spacing`` (k = 1 ..
scans - 1; each within ``tolerance`` of its target time), their points moved into the current scan's frame by the
planar odometry motion (x, y, yaw of the base between the two stamps).

Choosing scans by time spacing (not "the last N messages") makes the merged cloud the same at any radar rate: a
15 Hz radar at run time and the 2 Hz training bags give the same kind of input. The same class serves training
(``training.dataset``), evaluation (``eval.evaluate``) and the runtime (``core.pipeline``), so the encoder sees the
same tensors everywhere.

Approximation, documented in the model card: the motion is applied in the sensor frame, i.e. the radar's mounting
offset from the base is taken as zero. The error is the offset times the heading change between the scans (3.6 m
offset, 1 s, 20 deg/s turn: about 1.2 m, one cell of the 1.25 m grid) and is the same in training and at run time.
Scans without a pose are returned alone and not kept (they cannot be moved later).
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Pose

__all__ = ["STAT_KEYS", "OdometryScanMerger", "ScanAccumulator", "move_points"]

STAT_KEYS = ("scans_merged", "scans_missing", "scans_without_pose")  # ScanAccumulator.stats()


def move_points(points: np.ndarray, src: tuple[float, float, float], dst: tuple[float, float, float]) -> np.ndarray:
    """``points`` (structured with ``x``, ``y`` fields, or ``(N, >=2)``) seen from planar pose ``src`` = (x, y, yaw),
    expressed in the frame of planar pose ``dst``; a new array, other fields unchanged."""
    dx, dy = src[0] - dst[0], src[1] - dst[1]
    c0, s0 = math.cos(dst[2]), math.sin(dst[2])
    tx, ty = c0 * dx + s0 * dy, -s0 * dx + c0 * dy  # src origin in dst's frame
    da = src[2] - dst[2]
    c, s = math.cos(da), math.sin(da)
    out = points.copy()
    if points.dtype.names is not None:
        x, y = points["x"].astype(np.float64), points["y"].astype(np.float64)
        out["x"] = c * x - s * y + tx
        out["y"] = s * x + c * y + ty
    else:
        x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
        out[:, 0] = c * x - s * y + tx
        out[:, 1] = s * x + c * y + ty
    return out


class ScanAccumulator:
    """Merge each scan of one sensor with ``scans - 1`` earlier ones ``spacing_s`` apart (see the module text)."""

    MAX_HISTORY = 4096  # scans kept at most, whatever the stamps do

    def __init__(self, scans: int, spacing_s: float, tolerance_s: float) -> None:
        if not isinstance(scans, int) or isinstance(scans, bool) or not 1 <= scans <= 32:
            raise ConfigError("radar.scans", scans, "an integer in 1..32")
        if not (math.isfinite(spacing_s) and spacing_s > 0):
            raise ConfigError("radar.scan_spacing_s", spacing_s, "a number > 0")
        if not (math.isfinite(tolerance_s) and 0 < tolerance_s < spacing_s):
            raise ConfigError("radar.scan_tolerance_s", tolerance_s, f"0 < tolerance < scan_spacing_s ({spacing_s})")
        self.scans = scans
        self.spacing_ns = round(spacing_s * 1e9)
        self.tolerance_ns = round(tolerance_s * 1e9)
        self._keep_ns = (scans - 1) * self.spacing_ns + self.tolerance_ns
        self._history: deque[tuple[int, np.ndarray, tuple[float, float, float]]] = deque()
        self._newest: int | None = None  # newest stamp in the history
        self.merged_scans = 0  # earlier scans merged in, over all calls (diagnostics)
        self.missing_scans = 0  # earlier scans wanted but not found within the tolerance
        self.unposed_scans = 0  # scans without an odometry pose (used alone)

    def reset(self) -> None:
        """Forget the history (time went back: a bag loop or a new recording)."""
        self._history.clear()
        self._newest = None

    def stats(self) -> dict[str, int]:
        """The counters for diagnostics: earlier scans merged in, wanted but not found, scans without a pose."""
        return dict(zip(STAT_KEYS, (self.merged_scans, self.missing_scans, self.unposed_scans)))

    def __len__(self) -> int:
        return len(self._history)

    def merge(self, stamp_ns: int, points: np.ndarray, pose: Pose | None) -> np.ndarray:
        """Keep this scan and return it merged with the earlier ones (the scan itself first, then older ones)."""
        if self.scans == 1:
            return points
        if pose is None:
            self.unposed_scans += 1
            return points
        here = (pose.x, pose.y, pose.yaw)
        parts = [points]
        used: set[int] = set()
        stamps = [h[0] for h in self._history]
        for k in range(1, self.scans):
            target = stamp_ns - k * self.spacing_ns
            best, best_d = -1, self.tolerance_ns + 1
            for i, t in enumerate(stamps):
                d = abs(t - target)
                if t < stamp_ns and d < best_d and i not in used:
                    best, best_d = i, d
            if best < 0:
                self.missing_scans += 1
                continue
            used.add(best)
            _, pts, src = self._history[best]
            parts.append(move_points(pts, src, here))
            self.merged_scans += 1
        self._history.append((stamp_ns, points, here))
        self._newest = stamp_ns if self._newest is None else max(self._newest, stamp_ns)
        while self._history and (self._history[0][0] < self._newest - self._keep_ns
                                 or len(self._history) > self.MAX_HISTORY):
            self._history.popleft()
        if len(parts) == 1:
            return points
        if points.dtype.names is not None:
            return np.concatenate([p.astype(points.dtype, copy=False) for p in parts])
        return np.concatenate(parts, axis=0)


class OdometryScanMerger:
    """A :class:`ScanAccumulator` with its own odometry pose buffer, for a node that gets scans and odometry on
    different threads (the split ``encoder_node``; the fusion pipeline has its own pose buffer). Thread-safe. When
    the odometry or the scans go back in time by more than ``jump_back_ns`` (a bag loop), poses and history are
    forgotten."""

    def __init__(self, accumulator: ScanAccumulator, poses: PoseBuffer, jump_back_ns: int = 1_000_000_000) -> None:
        self.accumulator = accumulator
        self.poses = poses
        self.jump_back_ns = jump_back_ns
        self.time_jumps = 0
        self.lock = threading.RLock()
        self._newest_pose: int | None = None
        self._newest_scan: int | None = None

    def add_pose(self, stamp_ns: int, pose: Pose) -> bool:
        """Feed one odometry pose; True when it went back in time (poses and scan history were reset)."""
        with self.lock:
            jumped = self._newest_pose is not None and stamp_ns < self._newest_pose - self.jump_back_ns
            if jumped:
                self._reset()
            self._newest_pose = stamp_ns if self._newest_pose is None else max(self._newest_pose, stamp_ns)
            self.poses.add(stamp_ns, pose)
            return jumped

    def pose_for(self, stamp_ns: int) -> Pose | None:
        """The odometry pose of a scan stamped ``stamp_ns`` (None without one); a scan stamped back in time resets
        the history. Call with :attr:`lock` held around this and the merge (``FrameEmbedder.embed``) that uses the
        same accumulator, so a reset from the odometry thread never meets a merge half done."""
        if self._newest_scan is not None and stamp_ns < self._newest_scan - self.jump_back_ns:
            self.accumulator.reset()
            self._newest_scan = None
            self.time_jumps += 1
        self._newest_scan = stamp_ns if self._newest_scan is None else max(self._newest_scan, stamp_ns)
        return self.poses.lookup(stamp_ns)

    def merge(self, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        """:meth:`ScanAccumulator.merge` with the pose of ``stamp_ns`` from the odometry (the scan alone without)."""
        with self.lock:
            return self.accumulator.merge(stamp_ns, points, self.pose_for(stamp_ns))

    def _reset(self) -> None:
        self.poses.clear()
        self.accumulator.reset()
        self._newest_pose = None
        self._newest_scan = None
        self.time_jumps += 1
