"""Time alignment of the sensor streams into frame sets, with a tolerance and a timeout (no ROS).

Why our own: ``message_filters`` is not installable here and its ApproximateTime policy drops sets that miss a
stream; Autoware's experience is that a fusion node must keep working when one sensor is late or gone. Here:

* a frame joins the open set whose anchor stamp is nearest within ``tolerance`` and that lacks its modality,
  else it opens a new set (anchor = its stamp);
* a set is emitted as soon as it is complete, or as soon as every stream it lacks has delivered a frame stamped
  past ``anchor + tolerance`` (in-order streams cannot fill it any more), or, for a stream that went silent, when
  ``now`` passes the set's opening time + ``timeout``: partial sets are processed, never dropped;
* ``now`` is the caller's arrival clock (a monotonic clock in a node, the bag's log time offline), never compared
  with the stamps, so a bag replayed without sim time works too; since timeouts only matter for silent streams,
  the same message order gives the same sets live and offline.

Sets are emitted as soon as they are ready; each call returns its sets in anchor order. Times are integer
nanoseconds.

Time jumps: a frame stamped more than ``jump_back_ns`` before the newest frame of its own stream (a bag that
loops, a sensor clock reset) starts a new time line: the open sets are emitted first (they hold valid data of the
old time line), then the buffers are cleared, so the stale ``newest stamp`` of each stream neither closes new sets
early (as partial sets) nor keeps old sets waiting. ``reset()`` does the same on demand (``/clock`` jumped back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cmr_fusion_ros.core.decode import Frame
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.types import Modality

__all__ = ["DEFAULT_JUMP_BACK_NS", "Frame", "FrameSet", "Synchronizer", "jump_back_threshold_ns"]

DEFAULT_JUMP_BACK_NS = 1_000_000_000


def jump_back_threshold_ns(tolerance_ns: int, timeout_ns: int) -> int:
    """How far back a stamp must go to count as a time jump: 1 s, or twice the sync window when that is longer
    (sets emitted out of anchor order are at most about ``timeout + tolerance`` apart)."""
    return max(DEFAULT_JUMP_BACK_NS, 2 * (int(tolerance_ns) + int(timeout_ns)))


@dataclass(slots=True)
class FrameSet:
    """Frames of different modalities taken at (about) the same time; ``complete`` when every stream is in."""

    anchor_ns: int
    deadline_ns: int
    frames: dict[Modality, Frame] = field(default_factory=dict)
    complete: bool = False

    @property
    def stamp_ns(self) -> int:
        return self.anchor_ns


class Synchronizer:
    """Groups frames of several modalities by stamp. Not thread-safe: one caller (the node's sync callback)."""

    def __init__(self, modalities: Iterable[Modality], tolerance_ns: int, timeout_ns: int, max_open: int = 64,
                 jump_back_ns: int | None = None) -> None:
        self.modalities = tuple(dict.fromkeys(Modality(m) for m in modalities))
        if not self.modalities:
            raise ConfigError("sync.modalities", [], "at least one of camera, lidar, radar")
        if tolerance_ns < 0:
            raise ConfigError("sync.tolerance_s", tolerance_ns / 1e9, ">= 0")
        if timeout_ns < tolerance_ns:
            raise ConfigError("sync.timeout_s", timeout_ns / 1e9, f">= sync.tolerance_s ({tolerance_ns / 1e9})")
        self.tolerance_ns = int(tolerance_ns)
        self.timeout_ns = int(timeout_ns)
        self.max_open = int(max_open)
        self.jump_back_ns = int(jump_back_ns) if jump_back_ns is not None else jump_back_threshold_ns(tolerance_ns,
                                                                                                    timeout_ns)
        if self.jump_back_ns <= 0:
            raise ConfigError("sync.jump_back_ns", self.jump_back_ns, "> 0")
        self.time_jumps = 0
        self._open: list[FrameSet] = []
        self._last: dict[Modality, int] = {}

    @property
    def open_sets(self) -> int:
        return len(self._open)

    def push(self, frame: Frame, now_ns: int) -> list[FrameSet]:
        """Add a frame; return the sets that are ready (in anchor order; after a time jump, the sets of the old time
        line first)."""
        if frame.modality not in self.modalities:
            raise ConfigError("sync.modalities", frame.modality.value, f"one of {[m.value for m in self.modalities]}")
        m, s = frame.modality, frame.stamp_ns
        if self.is_jump(frame):
            return self.reset() + self.push(frame, now_ns)
        self._last[m] = max(self._last.get(m, s), s)
        best: FrameSet | None = None
        for fs in self._open:
            if m in fs.frames or abs(fs.anchor_ns - s) > self.tolerance_ns:
                continue
            if best is None or abs(fs.anchor_ns - s) < abs(best.anchor_ns - s):
                best = fs
        if best is None:
            best = FrameSet(anchor_ns=s, deadline_ns=now_ns + self.timeout_ns)
            self._open.append(best)
            self._open.sort(key=lambda f: f.anchor_ns)
        best.frames[m] = frame
        best.complete = len(best.frames) == len(self.modalities)
        return self._ready(now_ns)

    def poll(self, now_ns: int) -> list[FrameSet]:
        """Sets whose timeout has passed at ``now_ns`` (call it periodically)."""
        return self._ready(now_ns)

    def newest(self, modality: Modality) -> int | None:
        """The newest stamp seen on ``modality`` in the current time line (None before its first frame)."""
        return self._last.get(Modality(modality))

    def is_jump(self, frame: Frame) -> bool:
        """Whether ``frame`` is stamped more than ``jump_back_ns`` before the newest frame of its stream."""
        last = self._last.get(frame.modality)
        return last is not None and frame.stamp_ns < last - self.jump_back_ns

    def reset(self) -> list[FrameSet]:
        """Start a new time line: return every open set (oldest first) and forget the streams' newest stamps."""
        self.time_jumps += 1
        out = self.flush()
        self._last.clear()
        return out

    def flush(self) -> list[FrameSet]:
        """Every open set, complete or not (end of a bag, shutdown)."""
        out, self._open = self._open, []
        return out

    def _closable(self, fs: FrameSet, now_ns: int) -> bool:
        if fs.complete or now_ns >= fs.deadline_ns:
            return True
        limit = fs.anchor_ns + self.tolerance_ns
        return all(self._last.get(m, -1) > limit for m in self.modalities if m not in fs.frames)

    def _ready(self, now_ns: int) -> list[FrameSet]:
        out: list[FrameSet] = []
        # Emit in anchor order: a ready set waits for older open sets only while they may still fill up.
        while self._open and (self._closable(self._open[0], now_ns) or len(self._open) > self.max_open):
            out.append(self._open.pop(0))
        # Newer complete sets need not wait behind an older incomplete one that is still within its timeout.
        keep: list[FrameSet] = []
        for fs in self._open:
            (out if fs.complete else keep).append(fs)
        self._open = keep
        out.sort(key=lambda f: f.anchor_ns)
        return out
