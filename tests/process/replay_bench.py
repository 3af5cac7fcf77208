"""Measure `cmr-fusion replay` throughput and timing with a counting subscriber in another process.

    PYTHONPATH=. .venv/bin/python tests/process/replay_bench.py [--clouds 100] [--points 120000] [--workdir DIR]

Writes a bag of PointCloud2 (x, y, z, intensity float32) at 10 Hz plus std_msgs/String at 100 Hz, then runs
``cmr-fusion replay`` at ``--rate 0`` (as fast as possible) and ``--rate 1``, each with a subscriber process that
counts what arrives (raw CDR, reliable, keep_all). Prints the commands, the machine, the replay summaries and the
subscriber's counts. A benchmark, not a test: nothing here decides pass or fail.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

COUNTER = r"""
import sys, time, rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("replay_bench_counter")
got = {"/cloud": [0, 0], "/chatter": [0, 0]}
first = [None]
def cb(topic):
    def f(data):
        if first[0] is None:
            first[0] = time.monotonic()
        got[topic][0] += 1
        got[topic][1] += len(data)
    return f
qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)  # the reader keeps all
node.create_subscription(PointCloud2, "/cloud", cb("/cloud"), qos, raw=True)
node.create_subscription(String, "/chatter", cb("/chatter"), qos, raw=True)
print("READY", flush=True)
want = int(sys.argv[1])
last_change, last_total = time.monotonic(), 0
while time.monotonic() - last_change < 5.0:
    rclpy.spin_once(node, timeout_sec=0.05)
    total = got["/cloud"][0] + got["/chatter"][0]
    if total != last_total:
        last_change, last_total = time.monotonic(), total
    if total >= want:
        break
span = time.monotonic() - first[0] if first[0] else 0.0
mb = sum(b for _, b in got.values()) / 1e6
print(f"subscriber: /cloud {got['/cloud'][0]} msgs, /chatter {got['/chatter'][0]} msgs, {mb:.1f} MB received "
      f"over {span:.2f} s ({mb / span if span else 0:.1f} MB/s)", flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clouds", type=int, default=100)
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--qos-overrides", type=Path, default=None, help="passed on to cmr-fusion replay")
    args = parser.parse_args()

    from cmr_fusion_ros.machine import machine_summary
    from tests.process.replay_bags import CLOUD, STRING, cloud_cdr, string_cdr, write_bag

    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 200)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", machine_summary())
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = 1_700_000_000_000_000_000
        msgs = [("/cloud", CLOUD, t0 + i * 100_000_000, cloud_cdr(args.points, t0 + i * 100_000_000, seed=i % 4))
                for i in range(args.clouds)]
        msgs += [("/chatter", STRING, t0 + i * 10_000_000 + 1, string_cdr(f"msg {i}")) for i in range(args.clouds * 10)]
        bag = write_bag(Path(tmp) / "bench", msgs)
        size = sum(len(m[3]) for m in msgs) / 1e6
        print(f"bag: {args.clouds} PointCloud2 of {args.points} points ({len(msgs[0][3]) / 1e6:.2f} MB each) at 10 Hz"
              f" + {args.clouds * 10} String at 100 Hz, {size:.1f} MB, {args.clouds / 10:.1f} s")
        for rate in ("0", "1"):
            counter = subprocess.Popen([sys.executable, "-c", COUNTER, str(len(msgs))], stdout=subprocess.PIPE,
                                       text=True, env=env)
            assert counter.stdout.readline().strip() == "READY"
            cmd = [sys.executable, "-m", "cmr_fusion_ros.cli", "replay", str(bag), "--rate", rate, "--no-progress",
                   "--wait-for-subscribers", "2", "--wait-timeout", "30"]
            if args.qos_overrides:
                cmd += ["--qos-overrides", str(args.qos_overrides)]
            print(f"\n$ cmr-fusion replay BAG --rate {rate} --no-progress --wait-for-subscribers 2")
            start = time.monotonic()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            print(out.stdout.rstrip(), f"\n(process wall incl. start-up and acks: {time.monotonic() - start:.2f} s)")
            if out.returncode:
                print(out.stderr[-2000:])
            print(counter.communicate(timeout=120)[0].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
