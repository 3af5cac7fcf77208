"""`cmr-fusion replay`: publish the recorded CDR bytes of rosbag2 bags with their timing (no ros2 bag needed)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

HELP = "replay rosbag2 bags (sqlite3, mcap) on ROS 2 topics with the recorded timing, /clock, remaps and QoS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG",
                        help="bag folders (with metadata.yaml) or single .mcap/.db3 files; several are merged in time")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor; 0 publishes as fast as possible (default 1)")
    parser.add_argument("--loop", action="store_true", help="start again at the end until interrupted")
    parser.add_argument("--clock", action="store_true", help="publish /clock (rosgraph_msgs/Clock) from bag time")
    parser.add_argument("--clock-hz", type=float, default=100.0, help="/clock publishing frequency (default 100)")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the bag(s)")
    parser.add_argument("--topics", nargs="+", default=None, metavar="T", help="replay only these topics")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="publish topic FROM under the name TO (repeatable)")
    parser.add_argument("--qos-overrides", default=None, metavar="FILE",
                        help="YAML {topic: {reliability, durability, history, depth}} as for ros2 bag play")
    parser.add_argument("--delay", type=float, default=0.0, metavar="S", help="wait S seconds before playing")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="before playing, wait until N subscriptions in total are matched on the replayed topics")
    parser.add_argument("--wait-timeout", type=float, default=30.0, metavar="S",
                        help="give up (exit 3) when --wait-for-subscribers is not met after S seconds (default 30)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace):
    from cmr_fusion_ros.bag.replay import ReplayOptions, load_qos_overrides, parse_remaps

    return ReplayOptions(
        rate=args.rate, loop=args.loop, clock=args.clock, clock_hz=args.clock_hz, start_offset_s=args.start_offset,
        topics=tuple(args.topics) if args.topics else None, remaps=parse_remaps(args.remap),
        qos_overrides=load_qos_overrides(args.qos_overrides) if args.qos_overrides else {},
        delay_s=args.delay, wait_for_subscribers=args.wait_for_subscribers, wait_timeout_s=args.wait_timeout)


def print_summary(result, out: TextIO) -> None:
    stats = result.stats
    rows = []
    for topic in result.plan:
        shown = topic.out_topic if topic.out_topic == topic.topic else f"{topic.out_topic} (from {topic.topic})"
        qos = ("skipped: type not importable" if topic in result.skipped
               else f"{topic.qos.describe()} [{topic.qos_source}]")
        rows.append((shown, topic.msgtype, qos, str(stats.messages.get(topic.index, 0)),
                     f"{stats.bytes.get(topic.index, 0) / 1e6:.3f}"))
    head = ("topic", "type", "qos", "messages", "MB")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for row in [head, *rows]:
        print("  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths)),
                         *(c.rjust(w) for c, w in zip(row[3:], widths[3:]))]).rstrip(), file=out)
    wall = stats.wall_s
    total, mb = stats.total_messages, stats.total_bytes / 1e6
    line = (f"replayed {total} messages ({mb:.3f} MB) in {wall:.3f} s wall: "
            f"{total / wall if wall > 0 else 0:.1f} msg/s, {mb / wall if wall > 0 else 0:.2f} MB/s, "
            f"achieved rate {stats.achieved_rate:.3f}x")
    if stats.clock_ticks:
        line += f", /clock ticks {stats.clock_ticks}"
    if stats.loops > 1:
        line += f", {stats.loops} passes"
    print(line, file=out)
    lat = stats.lateness_percentiles_ms()
    if lat:
        print(f"timing: publish later than due by p50 {lat[50]:.3f} ms, p99 {lat[99]:.3f} ms, max {lat[100]:.3f} ms",
              file=out)
    if stats.interrupted:
        print("stopped early (interrupted)", file=out)


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.ros.replayer import replay

    options = options_from_args(args)
    result = replay(args.bags, options, progress=not args.no_progress)
    print_summary(result, sys.stdout)
    if not result.waited:
        return 3
    return 0
