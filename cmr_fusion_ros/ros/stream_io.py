"""What the nodes' topics share: QoS (the project's parameters plus the standard overrides) and per-stream statistics.

QoS of every subscription and publisher comes from two places, in this order:

1. the simple way, the project's parameters ``streams.<camera|lidar|radar>.reliability`` / ``.depth`` for the
   sensor subscriptions (fixed profiles for odometry, embeddings and the outputs);
2. rclpy's standard QoS overrides (``QoSOverridingOptions``), read-only parameters a user gives in a parameter file or
   on the command line, e.g. ``qos_overrides./lidar/points.subscription.reliability: best_effort`` or
   ``qos_overrides./fusion_node/matches.publisher.durability: transient_local``; they win over 1.
   Policies that can be overridden: history, depth, reliability, durability.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind

from cmr_fusion_ros.core.errors import ConfigError

__all__ = ["StreamStats", "RecentProblems", "STAGES", "qos_for", "OVERRIDABLE", "subscribe", "advertise"]

STAGES = ("decode", "preprocess", "encode", "search", "publish")
OVERRIDABLE = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY)


def qos_for(reliability: str, depth: int) -> QoSProfile:
    """The profile the ``streams.*.reliability`` / ``depth`` parameters describe (keep last ``depth``)."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)


ALLOWED = {"reliability": "reliable | best_effort | system_default | best_available",
           "durability": "volatile | transient_local | system_default | best_available",
           "history": "keep_last | keep_all | system_default", "depth": "an integer >= 0"}


def _with_overrides(node: Node, kind: str, topic: str, create: Any):
    """Create the entity with the standard overrides; a bad override value stops the node naming the parameter."""
    try:
        return create(QoSOverridingOptions(policy_kinds=OVERRIDABLE))
    except (RuntimeError, ValueError, TypeError) as err:
        prefix = f"qos_overrides.{node.resolve_topic_name(topic)}.{kind}."
        given = {name: p.value for name, p in getattr(node, "_parameter_overrides", {}).items()
                 if name.startswith(prefix)}
        if not given:
            raise
        name = next((n for n, v in given.items() if f"`{v}`" in str(err)), next(iter(given)))
        raise ConfigError(name, given[name], ALLOWED.get(name.rsplit(".", 1)[1], "a QoS policy value"),
                          source=f"parameters of node {node.get_name()}") from err


def subscribe(node: Node, msg_type: Any, topic: str, callback: Any, qos: QoSProfile | int):
    """``node.create_subscription`` with the standard QoS overrides (``qos_overrides.<topic>.subscription.*``)."""
    return _with_overrides(node, "subscription", topic, lambda options: node.create_subscription(
        msg_type, topic, callback, qos, qos_overriding_options=options))


def advertise(node: Node, msg_type: Any, topic: str, qos: QoSProfile | int):
    """``node.create_publisher`` with the standard QoS overrides (``qos_overrides.<topic>.publisher.*``)."""
    return _with_overrides(node, "publisher", topic, lambda options: node.create_publisher(
        msg_type, topic, qos, qos_overriding_options=options))


@dataclass
class StreamStats:
    """Counters and recent timings of one stream. ``latencies_ms``: receive -> processed and published (includes
    the wait in the queue); ``stages``: per-stage times (ms).

    The counters count since start; :meth:`summary` also gives ``dropped_recent`` / ``bad_messages_recent``: how many
    came in the last ``window_s`` seconds (from the totals seen at earlier summaries, so the window reaches back by at
    most one diagnostics period more). The diagnostics level follows those: WARN while drops or bad messages are
    recent, OK again once they stop."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    bad_messages: int = 0
    window_s: float = 10.0
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))
    arrivals: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    stages: dict = field(default_factory=lambda: {s: collections.deque(maxlen=2000) for s in STAGES})
    # (monotonic time, dropped, bad_messages) at start and at each summary
    _marks: collections.deque = field(default_factory=lambda: collections.deque([(time.monotonic(), 0, 0)]))

    def stage_summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, values in self.stages.items():
            if values:
                arr = np.asarray(values, dtype=float)
                out[f"{name}_p50_ms"] = float(np.percentile(arr, 50))
                out[f"{name}_p99_ms"] = float(np.percentile(arr, 99))
        return out

    def recent(self, now: float | None = None) -> tuple[int, int]:
        """(dropped, bad messages) in the last ``window_s`` seconds (see the class doc)."""
        now = time.monotonic() if now is None else now
        self._marks.append((now, self.dropped, self.bad_messages))
        while len(self._marks) > 1 and self._marks[1][0] <= now - self.window_s:
            self._marks.popleft()  # keep the newest mark at or before the window's start as the baseline
        _, dropped, bad = self._marks[0]
        return self.dropped - dropped, self.bad_messages - bad

    def summary(self, now: float | None = None) -> dict[str, float | int]:
        lat = np.asarray(self.latencies_ms, dtype=float)
        now = time.monotonic() if now is None else now
        recent = [t for t in self.arrivals if now - t <= 5.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        dropped_recent, bad_recent = self.recent(now)
        return {
            "rate_hz": float(rate),
            "received": self.received,
            "processed": self.processed,
            "dropped": self.dropped,
            "bad_messages": self.bad_messages,
            "dropped_recent": dropped_recent,
            "bad_messages_recent": bad_recent,
            "window_s": float(self.window_s),
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else 0.0,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else 0.0,
            **self.stage_summary(),
        }


class RecentProblems:
    """Processing errors with the time they happened: the diagnostics show (and level ERROR on) those of the last
    ``window_s`` seconds; ``total`` counts all of them."""

    def __init__(self, window_s: float = 10.0, keep: int = 50) -> None:
        self.window_s = window_s
        self.total = 0
        self._items: collections.deque[tuple[float, str]] = collections.deque(maxlen=keep)

    def add(self, text: str, now: float | None = None) -> None:
        self.total += 1
        self._items.append((time.monotonic() if now is None else now, text))

    def recent(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [text for t, text in self._items if now - t <= self.window_s]

    def __len__(self) -> int:  # all of them, recent or not
        return self.total
