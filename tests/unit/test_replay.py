"""Replay plan and timing without ROS: remap/QoS parsing, bag merging, filters, offsets, and the player's clock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cmr_fusion_ros.bag.replay import (
    BagSet,
    Player,
    QosSpec,
    ReplayOptions,
    load_qos_overrides,
    parse_qos_overrides,
    parse_remap,
    parse_remaps,
    qos_from_offers,
)
from cmr_fusion_ros.core.errors import BagError, ConfigError
from tests.process.replay_bags import CLOUD, STRING, chatter_bag, cloud_cdr, qos, string_cdr, write_bag

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


# ---------------------------------------------------------------- remaps

def test_parse_remap_normalises_names():
    assert parse_remap("/a/b:=/c") == ("/a/b", "/c")
    assert parse_remap("camera/image := front/image") == ("/camera/image", "/front/image")


@pytest.mark.parametrize("bad", ["foo", "/a:=", ":=/b", "/a:=/b:=/c", "/1x:=/y", "/a:=/b//c", "/a b:=/c", "/a/:=/b"])
def test_parse_remap_names_the_bad_value(bad):
    with pytest.raises(ConfigError, match=r"'--remap'.*" + __import__("re").escape(repr(bad))) as info:
        parse_remap(bad)
    assert info.value.key == "--remap" and info.value.value == bad and "FROM:=TO" in info.value.allowed


def test_parse_remaps_rejects_two_targets_for_one_topic():
    assert parse_remaps(["/a:=/b", "/a:=/b", "/c:=/d"]) == {"/a": "/b", "/c": "/d"}
    with pytest.raises(ConfigError, match="already remapped to /b"):
        parse_remaps(["/a:=/b", "/a:=/x"])


# ---------------------------------------------------------------- QoS

def test_qos_overrides_in_ros2_bag_format():
    got = parse_qos_overrides({
        "/camera/image": {"reliability": "best_effort", "durability": "volatile", "history": "keep_last", "depth": 5},
        "lidar/points": {"reliability": "RELIABLE", "deadline": {"sec": 1, "nsec": 500}},
        "/tf_static": {"durability": "transient_local", "history": "keep_all"},
    })
    assert got["/camera/image"] == QosSpec("best_effort", "volatile", "keep_last", 5)
    assert got["/lidar/points"].reliability == "reliable" and got["/lidar/points"].deadline_ns == 1_000_000_500
    assert got["/lidar/points"].depth == 10  # default
    assert got["/tf_static"].history == "keep_all" and got["/tf_static"].latched


@pytest.mark.parametrize("settings, key", [
    ({"reliability": "sometimes"}, "/cam.reliability"),
    ({"durability": 3}, "/cam.durability"),
    ({"depth": -1}, "/cam.depth"),
    ({"depth": "ten"}, "/cam.depth"),
    ({"depth": 0}, "/cam.depth"),  # keep_last needs depth >= 1
    ({"relability": "reliable"}, "/cam.relability"),
    ({"lifespan": {"sec": -1}}, "/cam.lifespan"),
    ({"avoid_ros_namespace_conventions": "yes"}, "/cam.avoid_ros_namespace_conventions"),
])
def test_qos_override_errors_name_the_key(settings, key):
    with pytest.raises(ConfigError) as info:
        parse_qos_overrides({"/cam": settings}, source="o.yaml")
    assert info.value.key == key and info.value.source == "o.yaml"
    assert key in str(info.value) and "o.yaml" in str(info.value)


def test_qos_override_file(tmp_path):
    good = tmp_path / "qos.yaml"
    good.write_text("/chatter:\n  reliability: best_effort\n  depth: 3\n")
    assert load_qos_overrides(good) == {"/chatter": QosSpec(reliability="best_effort", depth=3)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("/chatter: [reliable\n")
    with pytest.raises(BagError, match="not valid YAML"):
        load_qos_overrides(bad)
    with pytest.raises(BagError, match="cannot read"):
        load_qos_overrides(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- /chatter\n")
    with pytest.raises(ConfigError, match="mapping of topic name"):
        load_qos_overrides(top)


def test_qos_adapted_from_recorded_offers():
    assert qos_from_offers([], "/x") == QosSpec()
    assert qos_from_offers([qos("BEST_EFFORT", depth=1)], "/x") == QosSpec(reliability="best_effort", depth=10)
    mixed = qos_from_offers([qos("RELIABLE", "TRANSIENT_LOCAL", 50), qos("BEST_EFFORT", "VOLATILE", 5)], "/x")
    assert (mixed.reliability, mixed.durability, mixed.depth) == ("best_effort", "volatile", 50)
    latched = qos_from_offers([qos("RELIABLE", "TRANSIENT_LOCAL")] * 2, "/map")
    assert latched.durability == "transient_local" and latched.reliability == "reliable"
    tf = qos_from_offers([qos("BEST_EFFORT", "VOLATILE", 1)], "/tf_static")
    assert tf.latched and tf.reliability == "reliable" and tf.depth >= 10


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("kwargs, key", [
    ({"rate": -1.0}, "--rate"), ({"rate": float("nan")}, "--rate"), ({"clock_hz": 0.0}, "--clock-hz"),
    ({"start_offset_s": -0.5}, "--start-offset"), ({"delay_s": -1}, "--delay"),
    ({"wait_for_subscribers": -2}, "--wait-for-subscribers"), ({"wait_timeout_s": 0}, "--wait-timeout"),
    ({"topics": ("/ok", "9bad")}, "--topics"),
])
def test_options_validate(kwargs, key):
    with pytest.raises(ConfigError) as info:
        ReplayOptions(**kwargs)
    assert info.value.key == key


# ---------------------------------------------------------------- bag set

def _two_bags(tmp_path: Path) -> list[Path]:
    a = chatter_bag(tmp_path / "a", n=5, start_ns=T0, period_ns=100 * MS)  # 0, 100, ..., 400 ms
    b = write_bag(tmp_path / "b", [("/cloud", CLOUD, T0 + 50 * MS + i * 100 * MS, cloud_cdr(10, T0 + i, seed=i))
                                   for i in range(4)], storage="mcap",
                  qos_by_topic={"/cloud": qos("BEST_EFFORT", depth=5)})
    return [a, b]


def _read_all(bags: BagSet) -> list[tuple[str, int]]:
    return [(bags.plan[i].topic, (stamp - T0) // MS) for i, stamp, _ in bags.messages()]


def test_several_bags_merge_in_time_order(tmp_path):
    with BagSet(_two_bags(tmp_path), ReplayOptions()) as bags:
        got = _read_all(bags)
        plan = {t.topic: t for t in bags.plan}
    assert got == [("/chatter", 0), ("/cloud", 50), ("/chatter", 100), ("/cloud", 150), ("/chatter", 200),
                   ("/cloud", 250), ("/chatter", 300), ("/cloud", 350), ("/chatter", 400)]
    assert plan["/cloud"].msgtype == CLOUD and plan["/cloud"].count == 4
    assert plan["/cloud"].qos.reliability == "best_effort" and plan["/cloud"].qos_source == "bag"
    assert plan["/chatter"].qos_source == "default"
    assert bags.start_ns == T0 and bags.end_ns - (T0 + 400 * MS) in (0, 1)  # rosbags' end is exclusive


def test_bag_content_is_the_recorded_cdr(tmp_path):
    bag = chatter_bag(tmp_path / "a", n=3)
    with BagSet([bag], ReplayOptions()) as bags:
        assert [d for _, _, d in bags.messages()] == [string_cdr(f"msg {i}") for i in range(3)]


def test_topic_filter_offset_and_remap(tmp_path):
    opts = ReplayOptions(topics=("/cloud",), start_offset_s=0.2, remaps={"/cloud": "/lidar/points"})
    with BagSet(_two_bags(tmp_path), opts) as bags:
        assert [t.topic for t in bags.plan] == ["/cloud"] and bags.plan[0].out_topic == "/lidar/points"
        assert bags.first_ns == T0 + 200 * MS
        assert _read_all(bags) == [("/cloud", 250), ("/cloud", 350)]
        # a second pass (--loop) yields the same messages again
        assert _read_all(bags) == [("/cloud", 250), ("/cloud", 350)]


def test_unknown_topics_and_remaps_are_named(tmp_path):
    paths = _two_bags(tmp_path)
    with pytest.raises(ConfigError, match=r"'--topics'.*/nope.*/chatter, /cloud"):
        BagSet(paths, ReplayOptions(topics=("/chatter", "/nope"))).open()
    with pytest.raises(ConfigError, match=r"'--remap'.*/typo"):
        BagSet(paths, ReplayOptions(remaps={"/typo": "/x"})).open()
    with pytest.raises(ConfigError, match="also published on /cloud"):
        BagSet(paths, ReplayOptions(remaps={"/chatter": "/cloud"})).open()
    with pytest.raises(BagError, match="no such bag"):
        BagSet([tmp_path / "missing"], ReplayOptions()).open()
    (tmp_path / "junk").mkdir()
    with pytest.raises(BagError, match="cannot open the bag"):
        BagSet([tmp_path / "junk"], ReplayOptions()).open()


def test_same_topic_with_two_types_is_refused(tmp_path):
    a = chatter_bag(tmp_path / "a", n=2, topic="/x")
    b = write_bag(tmp_path / "b", [("/x", CLOUD, T0, cloud_cdr(2, T0))])
    with pytest.raises(BagError, match="/x is recorded with different types"):
        BagSet([a, b], ReplayOptions()).open()


def test_qos_override_by_recorded_or_published_name(tmp_path):
    paths = _two_bags(tmp_path)
    over = {"/chatter": QosSpec(depth=3), "/points": QosSpec(reliability="best_effort", depth=7),
            "/absent": QosSpec()}
    with BagSet(paths, ReplayOptions(remaps={"/cloud": "/points"}, qos_overrides=over)) as bags:
        plan = {t.topic: t for t in bags.plan}
        assert plan["/chatter"].qos.depth == 3 and plan["/chatter"].qos_source == "override"
        assert plan["/cloud"].qos.depth == 7 and plan["/cloud"].qos_source == "override"
        assert any("/absent" in w for w in bags.warnings)


def test_tf_static_is_latched(tmp_path):
    bag = write_bag(tmp_path / "tf", [("/tf_static", STRING, T0, string_cdr("x"))],
                    qos_by_topic={"/tf_static": qos("BEST_EFFORT", "VOLATILE", 1)})
    with BagSet([bag], ReplayOptions()) as bags:
        assert bags.plan[0].qos.latched and bags.plan[0].qos_source == "latched"


def test_dropped_topics_are_not_read(tmp_path):
    with BagSet(_two_bags(tmp_path), ReplayOptions()) as bags:
        bags.drop([t.index for t in bags.plan if t.topic == "/cloud"])
        assert {t for t, _ in _read_all(bags)} == {"/chatter"}


# ---------------------------------------------------------------- player timing (fake clock)

class FakeClock:
    """Monotonic time that moves only when the player waits; each wait oversleeps by ``late_ns``."""

    def __init__(self, late_ns: int = 0, stop_after_waits: int | None = None) -> None:
        self.t = 5_000 * MS
        self.late_ns = late_ns
        self.waits = 0
        self.stop_after_waits = stop_after_waits
        self.stop = False

    def now_ns(self) -> int:
        return self.t

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        self.t += round(seconds * 1e9) + self.late_ns
        if self.stop_after_waits is not None and self.waits >= self.stop_after_waits:
            self.stop = True
        return self.stop

    def stopped(self) -> bool:
        return self.stop


class RecordingSink:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.out: list[tuple[str, int, int]] = []  # (kind, wall ns, index or clock stamp)

    def publish(self, index: int, data: bytes) -> None:
        self.out.append(("msg", self.clock.t, index))

    def publish_clock(self, stamp_ns: int) -> None:
        self.out.append(("clock", self.clock.t, stamp_ns))


def _stream(stamps_ms: list[int]):
    return lambda: iter([(i % 2, T0 + s * MS, b"x" * 10) for i, s in enumerate(stamps_ms)])


@pytest.mark.parametrize("rate", [1.0, 2.0, 0.5])
def test_messages_are_due_at_recorded_times_scaled_by_rate(rate):
    clock = FakeClock()
    sink = RecordingSink(clock)
    stats = Player(ReplayOptions(rate=rate), sink, clock).run(_stream([0, 100, 250, 1000]), T0)
    walls = [(w - 5_000 * MS) for kind, w, _ in sink.out if kind == "msg"]
    assert walls == [round(s * MS / rate) for s in (0, 100, 250, 1000)]
    assert stats.total_messages == 4 and stats.messages == {0: 2, 1: 2} and stats.total_bytes == 40
    assert stats.lateness_ns == [0, 0, 0, 0]
    assert stats.bag_span_ns == 1000 * MS and stats.achieved_rate == pytest.approx(rate)


def test_start_offset_maps_first_ns_to_wall_start():
    clock = FakeClock()
    sink = RecordingSink(clock)
    Player(ReplayOptions(), sink, clock).run(_stream([300, 400]), T0 + 200 * MS)
    assert [w - 5_000 * MS for k, w, _ in sink.out if k == "msg"] == [100 * MS, 200 * MS]


def test_late_wakeups_do_not_accumulate():
    clock = FakeClock(late_ns=3 * MS)  # every wait oversleeps by 3 ms
    sink = RecordingSink(clock)
    stats = Player(ReplayOptions(), sink, clock).run(_stream(list(range(0, 2000, 20))), T0)
    assert stats.total_messages == 100
    # each message is at most one oversleep late, never the sum of all earlier ones
    assert max(stats.lateness_ns) == 3 * MS and min(stats.lateness_ns) == 0
    last_wall = [w for k, w, _ in sink.out if k == "msg"][-1] - 5_000 * MS
    assert last_wall <= 1980 * MS + 3 * MS


def test_rate_zero_never_waits():
    clock = FakeClock()
    sink = RecordingSink(clock)
    stats = Player(ReplayOptions(rate=0), sink, clock).run(_stream([0, 100, 5000]), T0)
    assert clock.waits == 0 and stats.total_messages == 3 and stats.lateness_ns == []


def test_clock_ticks_follow_bag_time():
    clock = FakeClock()
    sink = RecordingSink(clock)
    stats = Player(ReplayOptions(rate=2.0, clock=True, clock_hz=100), sink, clock).run(_stream([0, 200, 400]), T0)
    ticks = [(w - 5_000 * MS, stamp - T0) for k, w, stamp in sink.out if k == "clock"]
    assert sink.out[0][0] == "clock" and ticks[0] == (0, 0)
    # every 10 ms of wall time, carrying bag time = 2 x wall time elapsed
    assert [w for w, _ in ticks] == [i * 10 * MS for i in range(len(ticks))]
    assert all(stamp == 2 * w for w, stamp in ticks)
    assert ticks[-1][0] == 200 * MS and stats.clock_ticks == len(ticks) == 21
    # a message never goes out before the clock has reached (at most one tick below) its stamp
    last_clock = None
    for kind, _, value in sink.out:
        if kind == "clock":
            last_clock = value - T0
    assert last_clock == 400 * MS


def test_clock_at_rate_zero_is_throttled_in_bag_time():
    clock = FakeClock()
    sink = RecordingSink(clock)
    Player(ReplayOptions(rate=0, clock=True, clock_hz=10), sink, clock).run(_stream([0, 20, 50, 100, 130, 260]), T0)
    assert [(s - T0) // MS for k, _, s in sink.out if k == "clock"] == [0, 100, 260]


def test_loop_repeats_until_stopped():
    clock = FakeClock(stop_after_waits=5)  # the 5th wait (for 500 ms, pass 3) is interrupted
    sink = RecordingSink(clock)
    stats = Player(ReplayOptions(loop=True), sink, clock).run(_stream([0, 100, 200]), T0)
    walls = [w - 5_000 * MS for k, w, _ in sink.out if k == "msg"]
    # each pass starts where the previous one ended: its first message is due right at the end of the last one
    assert walls == [0, 100 * MS, 200 * MS, 200 * MS, 300 * MS, 400 * MS, 400 * MS]
    assert stats.interrupted and stats.loops == 2 and stats.total_messages == 7


def test_stop_interrupts_a_long_wait():
    clock = FakeClock(stop_after_waits=1)
    sink = RecordingSink(clock)
    stats = Player(ReplayOptions(), sink, clock).run(_stream([0, 60_000]), T0)
    assert stats.interrupted and stats.total_messages == 1 and clock.waits == 1


def test_empty_stream_with_loop_ends():
    clock = FakeClock()
    stats = Player(ReplayOptions(loop=True), RecordingSink(clock), clock).run(lambda: iter(()), T0)
    assert stats.total_messages == 0 and not stats.interrupted


def test_player_replays_a_real_bag_with_the_wall_clock(tmp_path):
    """The real MonotonicClock against a tiny bag: order and content, no timing asserted."""
    bag = chatter_bag(tmp_path / "a", n=4, period_ns=5 * MS)
    got: list[tuple[int, bytes]] = []

    class Sink:
        def publish(self, index: int, data: bytes) -> None:
            got.append((index, data))

        def publish_clock(self, stamp_ns: int) -> None:
            pass

    with BagSet([bag], ReplayOptions(rate=4.0)) as bags:
        stats = Player(bags.options, Sink()).run(bags.messages, bags.first_ns)
    assert [d for _, d in got] == [string_cdr(f"msg {i}") for i in range(4)]
    assert stats.total_messages == 4 and not stats.interrupted


def test_replay_core_does_not_import_rclpy():
    code = "import sys, cmr_fusion_ros.bag.replay, cmr_fusion_ros.commands.replay; print('rclpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "False"


def test_rate_zero_keeps_all_on_reliable_topics_unless_overridden(tmp_path):
    paths = _two_bags(tmp_path)  # /chatter: no recorded QoS (reliable default); /cloud: recorded best effort
    with BagSet(paths, ReplayOptions(rate=0)) as bags:
        plan = {t.topic: t for t in bags.plan}
    assert plan["/chatter"].qos.history == "keep_all" and plan["/chatter"].qos_source == "default, keep_all at rate 0"
    assert plan["/cloud"].qos.history == "keep_last"  # best effort: nothing to keep for
    over = {"/chatter": QosSpec(depth=4)}
    with BagSet(paths, ReplayOptions(rate=0, qos_overrides=over)) as bags:
        assert bags.plan[0].qos == QosSpec(depth=4) and bags.plan[0].qos_source == "override"
    with BagSet(paths, ReplayOptions(rate=1)) as bags:
        assert bags.plan[0].qos.history == "keep_last"
