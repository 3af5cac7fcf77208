"""The ROS 2 side of ``cmr-fusion replay``: publishers for the recorded CDR bytes, ``/clock``, waiting, signals.

The plan, the bag reading and the timing are in :mod:`cmr_fusion_ros.bag.replay` (no ROS); this module turns a
:class:`QosSpec` into an rclpy ``QoSProfile``, finds the message class for each recorded type, publishes the bytes
as they are (``Publisher.publish(bytes)`` sends already-serialized CDR), and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cmr_fusion_ros.bag.replay import (
    CLOCK_TOPIC,
    BagSet,
    MonotonicClock,
    Player,
    QosSpec,
    ReplayOptions,
    ReplayStats,
    TopicPlan,
)
from cmr_fusion_ros.core.signals import install_signal_watcher

__all__ = ["ReplayResult", "message_class", "qos_profile", "RosSink", "replay"]

NODE_NAME = "cmr_fusion_replay"


def message_class(msgtype: str) -> type | None:
    """``pkg/msg/Type`` (or ``pkg/Type``) -> the generated Python class, or None when it is not importable here."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        return None
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
    except ImportError:
        return None
    cls = getattr(module, name, None)
    return cls if isinstance(cls, type) else None


def qos_profile(spec: QosSpec) -> Any:
    from rclpy.duration import Duration
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy

    kwargs: dict[str, Any] = {
        "history": HistoryPolicy.KEEP_LAST if spec.history == "keep_last" else HistoryPolicy.KEEP_ALL,
        "depth": spec.depth,
        "reliability": ReliabilityPolicy.RELIABLE if spec.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        "durability": (DurabilityPolicy.TRANSIENT_LOCAL if spec.durability == "transient_local"
                       else DurabilityPolicy.VOLATILE),
        "liveliness": (LivelinessPolicy.AUTOMATIC if spec.liveliness == "automatic"
                       else LivelinessPolicy.MANUAL_BY_TOPIC),
        "avoid_ros_namespace_conventions": spec.avoid_ros_namespace_conventions,
    }
    for key in ("deadline", "lifespan", "liveliness_lease_duration"):
        ns = getattr(spec, f"{key}_ns")
        if ns:
            kwargs[key] = Duration(nanoseconds=ns)
    return QoSProfile(**kwargs)


class RosSink:
    """One publisher per replayed topic (the recorded type, the planned QoS) and, when asked, ``/clock``.

    ``backlog_bytes`` (rate 0, where reliable topics are keep_all): a keep_all writer holds every sample until its
    reliable readers acknowledge it, so a slow subscriber would make the whole bag pile up in memory. After every
    ``backlog_bytes`` published on reliable topics the sink waits until everything is acknowledged (Fast DDS
    acknowledges on its heartbeat, every few seconds: a small cost for a few hundred MB).
    """

    def __init__(self, node: Any, plan: Sequence[TopicPlan], classes: dict[int, type], clock: bool, *,
                 backlog_bytes: int | None = None, stop: threading.Event | None = None) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.node = node
        self.publishers: dict[int, Any] = {}
        self.reliable: list[Any] = []
        self._reliable_index: set[int] = set()
        self.backlog_bytes = backlog_bytes
        self._unacked = 0
        self.stop = stop or threading.Event()
        self.drain_timeouts = 0
        for topic in plan:
            if topic.index not in classes:
                continue
            pub = node.create_publisher(classes[topic.index], topic.out_topic, qos_profile(topic.qos))
            self.publishers[topic.index] = pub
            if topic.qos.reliability == "reliable":
                self.reliable.append(pub)
                self._reliable_index.add(topic.index)
        self.clock_pub = None
        self._clock_msg = None
        if clock:
            from rosgraph_msgs.msg import Clock

            # reliable, depth 1: matches both best-effort (rclpy/rclcpp clock subscriptions) and reliable readers
            self.clock_pub = node.create_publisher(Clock, CLOCK_TOPIC,
                                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            self._clock_msg = Clock()

    def publish(self, index: int, data: bytes) -> None:
        self.publishers[index].publish(data if isinstance(data, bytes) else bytes(data))
        if self.backlog_bytes is not None and index in self._reliable_index:
            self._unacked += len(data)
            if self._unacked >= self.backlog_bytes:
                if not self.drain(30.0) and not self.stop.is_set():
                    self.drain_timeouts += 1
                self._unacked = 0

    def publish_clock(self, stamp_ns: int) -> None:
        if self.clock_pub is None:
            return
        msg = self._clock_msg
        msg.clock.sec, msg.clock.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        self.clock_pub.publish(msg)

    def subscription_counts(self) -> dict[int, int]:
        return {i: pub.get_subscription_count() for i, pub in self.publishers.items()}

    def drain(self, timeout_s: float) -> bool:
        """Wait until reliable readers acknowledged everything published, in short steps (stop-aware), at most
        ``timeout_s``; publishers whose subscribers have all gone are not waited for. True when all acknowledged."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        pending = list(self.reliable)
        step = Duration(nanoseconds=200_000_000)
        while pending:
            pending = [p for p in pending if p.get_subscription_count() > 0 and not p.wait_for_all_acked(step)]
            if not pending:
                return True
            if self.stop.is_set() or time.monotonic() >= deadline:
                return False
        return True


@dataclass
class ReplayResult:
    plan: list[TopicPlan]
    stats: ReplayStats
    skipped: list[TopicPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    waited: bool = True  # False when --wait-for-subscribers timed out (nothing was replayed)
    subscriptions: int = 0


class _Progress:
    """A tqdm bar in bag seconds on stderr, refreshed at most 10 times a second."""

    def __init__(self, first_ns: int, end_ns: int, stream: TextIO) -> None:
        from tqdm import tqdm

        self.first_ns = first_ns
        self.bar = tqdm(total=max(0.0, round((end_ns - first_ns) / 1e9, 3)), unit="s", unit_scale=False,
                        desc="replay (bag s)", file=stream, dynamic_ncols=True, mininterval=0.1,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s "
                                   "[{elapsed}<{remaining}{postfix}]")
        self.count = 0
        self.last = 0.0
        self.last_stamp = first_ns

    def __call__(self, stamp: int, index: int) -> None:
        self.count += 1
        if stamp < self.last_stamp:  # a new loop pass
            self.bar.reset()
        self.last_stamp = stamp
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            self.bar.n = round(max(0, stamp - self.first_ns) / 1e9, 3)
            self.bar.set_postfix_str(f"{self.count} msgs", refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        self.bar.n = self.bar.total if self.count else self.bar.n
        self.bar.set_postfix_str(f"{self.count} msgs", refresh=False)
        self.bar.close()


def _install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop`` (from a watcher thread: the handler takes no lock, ``core/signals.py``; a second
    SIGINT falls back to KeyboardInterrupt); returns the restorer."""
    return install_signal_watcher(lambda _signum: stop.set(), interrupt_on_repeat=True, name="replay-signals")


def replay(paths: Sequence[str | Path], options: ReplayOptions, *, progress: bool = True,
           stop: threading.Event | None = None, log: Callable[[str], None] | None = None,
           ack_timeout_s: float = 30.0, backlog_bytes: int = 256_000_000) -> ReplayResult:
    """Replay ``paths`` with ``options`` over ROS 2; returns the plan and what was published.

    Stops early (``stats.interrupted``) on SIGINT/SIGTERM or when ``stop`` is set. At the end it waits (at most
    ``ack_timeout_s``) until reliable subscribers acknowledged everything, so nothing is lost by exiting. At rate 0
    at most ``backlog_bytes`` stay unacknowledged (see :class:`RosSink`). Initialises rclpy with its own signal
    handlers off and shuts it down again.
    """
    from cmr_fusion_ros.rosenv import apply_ros_defaults

    apply_ros_defaults()
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    stop = stop or threading.Event()
    restore = _install_stop_handlers(stop)
    try:
        with BagSet(paths, options) as bags:
            classes: dict[int, type] = {}
            skipped: list[TopicPlan] = []
            for topic in bags.plan:
                cls = message_class(topic.msgtype)
                if cls is None:
                    skipped.append(topic)
                else:
                    classes[topic.index] = cls
            warnings = list(bags.warnings)
            if skipped:
                warnings.append("skipping topics whose message type is not importable here: "
                                + ", ".join(f"{t.topic} ({t.msgtype})" for t in skipped))
                bags.drop([t.index for t in skipped])
            for text in warnings:
                say(f"warning: {text}")
            result = ReplayResult(plan=list(bags.plan), stats=ReplayStats(), skipped=skipped, warnings=warnings)
            # own argv only: the replay command line is not for rcl (FROM:=TO would read as a remap rule)
            # a context of its own: works beside an rclpy already initialised in this process
            context = Context()
            rclpy.init(args=[NODE_NAME], context=context, signal_handler_options=SignalHandlerOptions.NO)
            try:
                node = rclpy.create_node(NODE_NAME, context=context)
                try:
                    sink = RosSink(node, bags.plan, classes, options.clock, stop=stop,
                                   backlog_bytes=backlog_bytes if options.rate == 0 else None)
                    clock = MonotonicClock(stop)
                    if not _wait_and_delay(sink, options, bags.first_ns, clock, result, say):
                        return result
                    bar = _Progress(bags.first_ns, bags.end_ns, sys.stderr) if progress else None
                    try:
                        player = Player(options, sink, clock, progress=bar)
                        result.stats = player.run(bags.messages, bags.first_ns)
                    finally:
                        if bar is not None:
                            bar.close()
                    if sink.reliable and not stop.is_set() and not sink.drain(ack_timeout_s):
                        sink.drain_timeouts += 1
                    if sink.drain_timeouts:
                        result.warnings.append(f"reliable subscribers did not acknowledge everything in time "
                                               f"({sink.drain_timeouts} times): they may have missed messages")
                        say(f"warning: {result.warnings[-1]}")
                    result.stats.interrupted = result.stats.interrupted or stop.is_set()
                    return result
                finally:
                    node.destroy_node()
            finally:
                rclpy.try_shutdown(context=context)
    finally:
        restore()


def _wait_and_delay(sink: RosSink, options: ReplayOptions, first_ns: int, clock: MonotonicClock,
                    result: ReplayResult, say: Callable[[str], None]) -> bool:
    """--wait-for-subscribers then --delay, ticking /clock at the start time meanwhile. False: give up."""
    period = 1.0 / options.clock_hz
    if options.wait_for_subscribers > 0:
        need = options.wait_for_subscribers
        deadline = time.monotonic() + options.wait_timeout_s
        while True:
            have = sum(sink.subscription_counts().values())
            result.subscriptions = have
            if have >= need:
                break
            if time.monotonic() >= deadline:
                say(f"error: {have} of {need} subscriptions matched on the replayed topics "
                    f"after {options.wait_timeout_s:g} s (--wait-for-subscribers)")
                result.waited = False
                return False
            sink.publish_clock(first_ns)
            if clock.wait(min(period, 0.02) if options.clock else 0.02):
                result.stats.interrupted = True
                return False
    end = time.monotonic() + options.delay_s
    while (left := end - time.monotonic()) > 0:
        sink.publish_clock(first_ns)
        if clock.wait(min(left, period)):
            result.stats.interrupted = True
            return False
    return True
