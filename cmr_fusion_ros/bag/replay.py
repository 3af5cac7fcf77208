"""Replay rosbag2 bags (sqlite3 and mcap, via ``rosbags``): the plan and the timing, with no ROS import.

The pieces, each testable on its own:

* :func:`parse_remap` / :func:`load_qos_overrides` turn the command line and a ``ros2 bag``-style QoS overrides YAML
  into values, raising :class:`ConfigError` naming the bad argument or key;
* :class:`QosSpec` is the QoS a replayed topic is published with: from the override file, else adapted from the
  ``offered_qos_profiles`` recorded in the bag (as ``ros2 bag play`` does), ``/tf_static`` always latched;
* :class:`BagSet` opens one or more bags, builds the :class:`TopicPlan` per replayed topic (filter, remap, QoS, type)
  and yields the recorded CDR bytes of every bag merged in receive-time order;
* :class:`Player` publishes a message stream with the recorded timing scaled by ``rate`` against a monotonic clock
  (each message has an absolute due time, so waiting errors never accumulate), ticks ``/clock`` from bag time,
  loops, and stops promptly when asked. Publishing, the clock and waiting are injected: the ROS side lives in
  :mod:`cmr_fusion_ros.ros.replayer`, tests use a fake clock.
"""

from __future__ import annotations

import heapq
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cmr_fusion_ros.core.errors import BagError, ConfigError

__all__ = [
    "BagSet",
    "Player",
    "QosSpec",
    "ReplayOptions",
    "ReplayStats",
    "Sink",
    "TopicPlan",
    "TF_STATIC",
    "load_qos_overrides",
    "parse_qos_overrides",
    "parse_remap",
    "parse_remaps",
    "qos_from_offers",
    "validate_topic_name",
]

TF_STATIC = "/tf_static"
CLOCK_TOPIC = "/clock"
DEFAULT_DEPTH = 10
LATCHED_DEPTH = 100  # /tf_static: every static transform recorded stays available to late subscribers

_RELIABILITY = ("reliable", "best_effort")
_DURABILITY = ("volatile", "transient_local")
_HISTORY = ("keep_last", "keep_all")
_LIVELINESS = ("automatic", "manual_by_topic")
_DURATION_KEYS = ("deadline", "lifespan", "liveliness_lease_duration")
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_topic_name(name: Any, key: str) -> str:
    """An absolute ROS 2 topic name (a missing leading ``/`` is added); ConfigError naming ``key`` otherwise."""
    allowed = "a ROS topic name: tokens of letters, digits and _ separated by /, not starting with a digit"
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(key, name, allowed)
    text = name.strip()
    full = text if text.startswith("/") else "/" + text
    tokens = full[1:].split("/")
    if full == "/" or not all(_TOKEN.match(t) for t in tokens):
        raise ConfigError(key, name, allowed)
    return full


def parse_remap(text: str) -> tuple[str, str]:
    """``FROM:=TO`` -> (``/from``, ``/to``); a ConfigError naming ``--remap`` and the value otherwise."""
    allowed = "FROM:=TO with two topic names, e.g. /camera/image:=/front/image"
    if not isinstance(text, str) or text.count(":=") != 1:
        raise ConfigError("--remap", text, allowed)
    src, dst = (part.strip() for part in text.split(":="))
    if not src or not dst:
        raise ConfigError("--remap", text, allowed)
    try:
        return validate_topic_name(src, "--remap"), validate_topic_name(dst, "--remap")
    except ConfigError:
        raise ConfigError("--remap", text, allowed) from None


def parse_remaps(values: Sequence[str] | None) -> dict[str, str]:
    """Several ``--remap`` values; the same FROM twice with different targets is an error."""
    out: dict[str, str] = {}
    for text in values or ():
        src, dst = parse_remap(text)
        if src in out and out[src] != dst:
            raise ConfigError("--remap", text, f"one target per topic; {src} is already remapped to {out[src]}")
        out[src] = dst
    return out


@dataclass(frozen=True, slots=True)
class QosSpec:
    """The QoS of one replayed topic, in ``ros2 bag``'s words. Durations are int nanoseconds, 0 = unset."""

    reliability: str = "reliable"
    durability: str = "volatile"
    history: str = "keep_last"
    depth: int = DEFAULT_DEPTH
    deadline_ns: int = 0
    lifespan_ns: int = 0
    liveliness: str = "automatic"
    liveliness_lease_duration_ns: int = 0
    avoid_ros_namespace_conventions: bool = False

    def __post_init__(self) -> None:
        for key, allowed in (("reliability", _RELIABILITY), ("durability", _DURABILITY), ("history", _HISTORY),
                             ("liveliness", _LIVELINESS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(key, getattr(self, key), " | ".join(allowed))
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise ConfigError("depth", self.depth, "an integer >= 0 (0 only with history keep_all)")
        if self.history == "keep_last" and self.depth == 0:
            raise ConfigError("depth", self.depth, "an integer >= 1 with history keep_last")
        for key in ("deadline_ns", "lifespan_ns", "liveliness_lease_duration_ns"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(key, v, "an integer >= 0 (nanoseconds, 0 = not set)")

    @property
    def latched(self) -> bool:
        return self.durability == "transient_local"

    def describe(self) -> str:
        depth = f"depth {self.depth}" if self.history == "keep_last" else "keep_all"
        return f"{self.reliability}, {self.durability}, {depth}"


LATCHED = QosSpec(reliability="reliable", durability="transient_local", history="keep_last", depth=LATCHED_DEPTH)


def _enum_name(value: Any) -> str:
    """A rosbags Qos enum member (or already a string / an int) as a lower-case ros2 name."""
    name = getattr(value, "name", value)
    return str(name).lower()


def qos_from_offers(offers: Sequence[Any], topic: str) -> QosSpec:
    """Adapt the QoS offered by the recorded publishers (rosbags ``Qos`` tuples), like ``ros2 bag play``.

    Reliable only if every recorded publisher was reliable; transient_local only if every one was (a mix is
    volatile); depth the largest recorded keep_last depth, at least 10. ``/tf_static`` is always reliable and
    transient_local with a deep history so late subscribers get every static transform.
    """
    if topic == TF_STATIC:
        return LATCHED
    if not offers:
        return QosSpec()
    rel = {_enum_name(q.reliability) for q in offers}
    dur = {_enum_name(q.durability) for q in offers}
    depths = [int(q.depth) for q in offers if _enum_name(q.history) == "keep_last" and int(q.depth) > 0]
    return QosSpec(
        reliability="reliable" if rel == {"reliable"} else "best_effort",
        durability="transient_local" if dur == {"transient_local"} else "volatile",
        history="keep_last",
        depth=max([DEFAULT_DEPTH, *depths]),
    )


def _duration_ns(value: Any, key: str, source: str | None = None) -> int:
    allowed = "{sec: S, nsec: N} with integers >= 0, or a number of seconds >= 0"
    if isinstance(value, bool):
        raise ConfigError(key, value, allowed, source=source)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(key, value, allowed, source=source)
        return round(value * 1_000_000_000)
    if isinstance(value, Mapping) and set(value) <= {"sec", "nsec"} and value:
        sec, nsec = value.get("sec", 0), value.get("nsec", 0)
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (sec, nsec)):
            total = sec * 1_000_000_000 + nsec
            # ros2 bag writes "infinite" as the largest representable duration: treat it as unset.
            return 0 if sec >= 0x7FFFFFFF else total
    raise ConfigError(key, value, allowed, source=source)


def parse_qos_overrides(data: Any, source: str = "QoS overrides") -> dict[str, QosSpec]:
    """``{topic: {reliability: ..., durability: ..., history: ..., depth: ..., ...}}`` -> QosSpec per topic.

    The ``ros2 bag play --qos-profile-overrides-path`` format. Missing keys take the defaults (reliable, volatile,
    keep_last, depth 10). Errors name the key as ``<topic>.<key>`` and the file.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("(top level)", type(data).__name__, "a mapping of topic name -> QoS settings",
                          source=source)
    known = {"reliability", "durability", "history", "depth", "liveliness", "avoid_ros_namespace_conventions",
             *_DURATION_KEYS}
    out: dict[str, QosSpec] = {}
    for topic, settings in data.items():
        name = validate_topic_name(topic, str(topic)) if isinstance(topic, str) else None
        if name is None:
            raise ConfigError(str(topic), topic, "a topic name as the key", source=source)
        if not isinstance(settings, Mapping):
            raise ConfigError(name, settings, "a mapping of QoS settings", source=source)
        kwargs: dict[str, Any] = {}
        for key, value in settings.items():
            full = f"{name}.{key}"
            if key not in known:
                raise ConfigError(full, value, "one of " + ", ".join(sorted(known)), source=source)
            if key in ("reliability", "durability", "history", "liveliness"):
                choices = {"reliability": _RELIABILITY, "durability": _DURABILITY, "history": _HISTORY,
                           "liveliness": _LIVELINESS}[key]
                text = value.lower() if isinstance(value, str) else value
                if text not in choices:
                    raise ConfigError(full, value, " | ".join(choices), source=source)
                kwargs[key] = text
            elif key == "depth":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(full, value, "an integer >= 0", source=source)
                kwargs[key] = value
            elif key == "avoid_ros_namespace_conventions":
                if not isinstance(value, bool):
                    raise ConfigError(full, value, "true | false", source=source)
                kwargs[key] = value
            else:
                kwargs[f"{key}_ns"] = _duration_ns(value, full, source)
        if kwargs.get("history") == "keep_all" and "depth" not in kwargs:
            kwargs["depth"] = 0
        try:
            out[name] = QosSpec(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{name}.{err.key}", err.value, err.allowed, source=source) from None
    return out


def load_qos_overrides(path: str | Path) -> dict[str, QosSpec]:
    """Read a QoS overrides YAML file (see :func:`parse_qos_overrides`)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise BagError(str(p), f"cannot read the QoS overrides file: {err.strerror or err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BagError(str(p), f"not valid YAML: {err}") from err
    return parse_qos_overrides(data, source=str(p))


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how. ``rate`` 0 means as fast as possible; times in seconds."""

    rate: float = 1.0
    loop: bool = False
    clock: bool = False
    clock_hz: float = 100.0
    start_offset_s: float = 0.0
    topics: tuple[str, ...] | None = None
    remaps: Mapping[str, str] = field(default_factory=dict)
    qos_overrides: Mapping[str, QosSpec] = field(default_factory=dict)
    delay_s: float = 0.0
    wait_for_subscribers: int = 0
    wait_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        def number(key: str, value: Any, lo: float, strict: bool = False) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < lo or (strict and value == lo):
                raise ConfigError(key, value, f"a finite number {'>' if strict else '>='} {lo:g}")

        number("--rate", self.rate, 0.0)
        number("--clock-hz", self.clock_hz, 0.0, strict=True)
        number("--start-offset", self.start_offset_s, 0.0)
        number("--delay", self.delay_s, 0.0)
        number("--wait-timeout", self.wait_timeout_s, 0.0, strict=True)
        if isinstance(self.wait_for_subscribers, bool) or not isinstance(self.wait_for_subscribers, int) \
                or self.wait_for_subscribers < 0:
            raise ConfigError("--wait-for-subscribers", self.wait_for_subscribers, "an integer >= 0")
        if self.topics is not None:
            object.__setattr__(self, "topics", tuple(validate_topic_name(t, "--topics") for t in self.topics))
        object.__setattr__(self, "remaps", dict(self.remaps))
        object.__setattr__(self, "qos_overrides", dict(self.qos_overrides))

    @property
    def start_offset_ns(self) -> int:
        return round(self.start_offset_s * 1_000_000_000)


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """One replayed topic: recorded name, published name, message type, QoS, and messages in the bags."""

    index: int
    topic: str
    out_topic: str
    msgtype: str
    qos: QosSpec
    qos_source: str  # "bag", "override", "latched" or "default" (+ ", keep_all at rate 0")
    count: int


@dataclass(frozen=True, slots=True)
class _Message:
    index: int
    stamp_ns: int
    data: bytes


class BagSet:
    """One or more rosbag2 bags (folders, or single ``.mcap`` / ``.db3`` files) replayed as one time-ordered stream.

    Use as a context manager. ``plan`` lists the replayed topics; :meth:`messages` yields
    ``(topic index, receive time ns, CDR bytes)`` merged over every bag in receive-time order (ties keep bag order).
    """

    def __init__(self, paths: Sequence[str | Path], options: ReplayOptions) -> None:
        if not paths:
            raise ConfigError("BAG", list(paths), "one or more bag folders or .mcap/.db3 files")
        self.paths = [Path(p) for p in paths]
        self.options = options
        self._stack: ExitStack | None = None
        self._readers: list[Any] = []
        self._conns: list[dict[int, int]] = []  # per reader: connection id -> topic index
        self.plan: list[TopicPlan] = []
        self.warnings: list[str] = []
        self.start_ns = 0
        self.end_ns = 0

    def __enter__(self) -> BagSet:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        from rosbags.rosbag2 import Reader

        self._stack = ExitStack()
        try:
            for path in self.paths:
                if not path.exists():
                    raise BagError(str(path), "no such bag folder or file")
                try:
                    reader = Reader(path)
                    self._stack.enter_context(reader)
                except BagError:
                    raise
                except Exception as err:  # rosbags raises its own ReaderError, FileNotFoundError, YAML errors...
                    raise BagError(str(path), f"cannot open the bag: {err}") from err
                self._readers.append(reader)
            self._build_plan()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _build_plan(self) -> None:
        opts = self.options
        by_topic: dict[str, list[tuple[int, Any]]] = {}
        for r, reader in enumerate(self._readers):
            for conn in reader.connections:
                by_topic.setdefault(conn.topic, []).append((r, conn))
        available = sorted(by_topic)
        if opts.topics is not None:
            missing = [t for t in opts.topics if t not in by_topic]
            if missing:
                raise ConfigError("--topics", missing, "topics in the bag(s): " + ", ".join(available))
        unknown_remaps = [src for src in opts.remaps if src not in by_topic]
        if unknown_remaps:
            raise ConfigError("--remap", unknown_remaps, "remap topics that are in the bag(s): " + ", ".join(available))
        for name in opts.qos_overrides:
            if name not in by_topic and name not in opts.remaps.values():
                self.warnings.append(f"QoS override for {name}: no such topic in the bag(s)")
        selected = [t for t in available if opts.topics is None or t in opts.topics]
        outs: dict[str, str] = {}
        self._conns = [{} for _ in self._readers]
        for topic in selected:
            conns = by_topic[topic]
            types = sorted({c.msgtype for _, c in conns})
            if len(types) > 1:
                raise BagError(", ".join(str(self.paths[r]) for r, _ in conns),
                               f"topic {topic} is recorded with different types: {', '.join(types)}")
            out = opts.remaps.get(topic, topic)
            if out in outs:
                raise ConfigError("--remap", f"{topic}:={out}",
                                  f"distinct targets; {outs[out]} is also published on {out}")
            outs[out] = topic
            if topic in opts.qos_overrides:
                qos, source = opts.qos_overrides[topic], "override"
            elif out in opts.qos_overrides:
                qos, source = opts.qos_overrides[out], "override"
            else:
                offers = [q for _, c in conns for q in getattr(c.ext, "offered_qos_profiles", None) or ()]
                qos = qos_from_offers(offers, topic)
                source = "latched" if topic == TF_STATIC else ("bag" if offers else "default")
                if opts.rate == 0 and qos.reliability == "reliable" and not qos.latched:
                    # as fast as possible: a keep_last writer would overwrite samples before slower reliable
                    # readers got them; keep_all keeps them until acknowledged (the player bounds the backlog)
                    qos = replace(qos, history="keep_all", depth=0)
                    source += ", keep_all at rate 0"
            index = len(self.plan)
            for r, c in conns:
                self._conns[r][c.id] = index
            self.plan.append(TopicPlan(index=index, topic=topic, out_topic=out, msgtype=types[0], qos=qos,
                                       qos_source=source, count=sum(c.msgcount for _, c in conns)))
        starts = [rd.start_time for rd in self._readers if rd.message_count]
        ends = [rd.end_time for rd in self._readers if rd.message_count]
        self.start_ns = min(starts) if starts else 0
        self.end_ns = max(ends) if ends else 0

    @property
    def first_ns(self) -> int:
        """Bag time where playback starts: the earliest message plus the start offset."""
        return self.start_ns + self.options.start_offset_ns

    def drop(self, indices: Sequence[int]) -> None:
        """Stop replaying these topics (e.g. types the publisher side cannot import)."""
        gone = set(indices)
        for conns in self._conns:
            for cid in [c for c, i in conns.items() if i in gone]:
                del conns[cid]

    def messages(self) -> Iterator[tuple[int, int, bytes]]:
        """One pass over the selected topics from :attr:`first_ns`, all bags merged in receive-time order."""
        if self._stack is None:
            raise BagError(", ".join(map(str, self.paths)), "the bag set is not open")
        start = self.first_ns

        def one(r: int) -> Iterator[tuple[int, int, int, bytes]]:
            conns = self._conns[r]
            if not conns:
                return
            wanted = [c for c in self._readers[r].connections if c.id in conns]
            try:
                for conn, stamp, data in self._readers[r].messages(connections=wanted, start=start):
                    yield stamp, r, conns[conn.id], data
            except Exception as err:
                raise BagError(str(self.paths[r]), f"cannot read messages: {err}") from err

        for stamp, _, index, data in heapq.merge(*(one(r) for r in range(len(self._readers))),
                                                 key=lambda m: (m[0], m[1])):
            yield index, stamp, data


class Sink(Protocol):
    """Where the player's output goes (ROS publishers in :mod:`cmr_fusion_ros.ros.replayer`)."""

    def publish(self, index: int, data: bytes) -> None: ...

    def publish_clock(self, stamp_ns: int) -> None: ...


@dataclass
class ReplayStats:
    """What a replay did. ``lateness_ns``: publish time minus due time per message (timed replays only)."""

    messages: dict[int, int] = field(default_factory=dict)
    bytes: dict[int, int] = field(default_factory=dict)
    clock_ticks: int = 0
    loops: int = 0
    wall_s: float = 0.0
    bag_span_ns: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    interrupted: bool = False
    lateness_ns: list[int] = field(default_factory=list)

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def achieved_rate(self) -> float:
        """Bag seconds replayed per wall second (the real replay rate)."""
        return (self.bag_span_ns / 1e9) / self.wall_s if self.wall_s > 0 else 0.0

    def lateness_percentiles_ms(self, qs: Sequence[float] = (50, 99, 100)) -> dict[float, float]:
        if not self.lateness_ns:
            return {}
        ordered = sorted(self.lateness_ns)
        n = len(ordered)
        return {q: ordered[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))] / 1e6 for q in qs}


class MonotonicClock:
    """The real clock: ``time.monotonic_ns`` and an interruptible wait on a stop event."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stop was requested."""
        return self.stop.wait(max(0.0, seconds))

    def stopped(self) -> bool:
        return self.stop.is_set()


class Player:
    """Publishes a message stream with the recorded timing.

    Message ``k`` at bag time ``t`` is due at wall time ``w0 + (t - t_first) / rate``: due times are absolute, so a
    late wake-up delays one message and never the rest. With ``rate`` 0 every message goes out at once (no waits).
    With ``clock`` on, ``/clock`` carries the bag time that the wall clock maps to, every ``1/clock_hz`` wall
    seconds (rate 0: before a message whenever bag time has moved on by at least ``1/clock_hz`` s). A loop starts
    the next pass where the previous one ended; /clock then jumps back to the start like ``ros2 bag play --loop``.
    """

    def __init__(self, options: ReplayOptions, sink: Sink, clock: Any | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.options = options
        self.sink = sink
        self.clock = clock or MonotonicClock()
        self.progress = progress
        self.period_ns = round(1e9 / options.clock_hz)

    def run(self, source: Callable[[], Iterator[tuple[int, int, bytes]]], first_ns: int) -> ReplayStats:
        """Replay ``source()`` (called again for each loop) whose playback starts at bag time ``first_ns``."""
        opts, clock, sink = self.options, self.clock, self.sink
        stats = ReplayStats()
        rate = opts.rate
        t_wall0 = clock.now_ns()
        w0 = t_wall0  # wall time of first_ns in the current pass
        next_tick = w0
        last_clock_bag: int | None = None
        pass_end_wall = w0
        while True:
            any_message = False
            pass_last: int | None = None
            for index, stamp, data in source():
                any_message = True
                if rate > 0:
                    due = w0 + round((stamp - first_ns) / rate)
                    while True:
                        now = clock.now_ns()
                        if opts.clock and now >= next_tick:
                            bag_now = first_ns + round((now - w0) * rate)
                            sink.publish_clock(bag_now)
                            stats.clock_ticks += 1
                            # the next tick on the regular grid after now (skipped ticks are not caught up)
                            next_tick += self.period_ns * max(1, (now - next_tick) // self.period_ns + 1)
                        if now >= due:
                            break
                        target = min(due, next_tick) if opts.clock else due
                        if clock.wait((target - now) / 1e9):
                            stats.interrupted = True
                            break
                    if stats.interrupted:
                        break
                    stats.lateness_ns.append(clock.now_ns() - due)
                    pass_end_wall = due
                else:
                    if clock.stopped():
                        stats.interrupted = True
                        break
                    if opts.clock and (last_clock_bag is None or stamp - last_clock_bag >= self.period_ns
                                       or stamp < last_clock_bag):
                        sink.publish_clock(stamp)
                        stats.clock_ticks += 1
                        last_clock_bag = stamp
                sink.publish(index, data)
                stats.messages[index] = stats.messages.get(index, 0) + 1
                stats.bytes[index] = stats.bytes.get(index, 0) + len(data)
                if stats.first_ns is None:
                    stats.first_ns = stamp
                stats.last_ns = stamp
                pass_last = stamp
                if self.progress is not None:
                    self.progress(stamp, index)
            if pass_last is not None:
                stats.bag_span_ns += max(0, pass_last - first_ns)
            if stats.interrupted or not any_message:
                break
            stats.loops += 1
            if not opts.loop:
                break
            # next pass: first_ns maps to where this pass ended; the bag-time span restarts from the first message
            w0 = pass_end_wall if rate > 0 else clock.now_ns()
        stats.wall_s = (clock.now_ns() - t_wall0) / 1e9
        return stats
