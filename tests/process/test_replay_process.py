"""`cmr-fusion replay` as a real process: a separate subscriber process gets every message, in order, with /clock."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tests.process.replay_bags import CLOUD, TYPESTORE, chatter_bag, cloud_cdr, qos, string_cdr, write_bag

REPO = Path(__file__).resolve().parents[2]
SUBSCRIBER = Path(__file__).with_name("replay_subscriber.py")
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def _env() -> dict[str, str]:
    env = dict(os.environ)  # the venv python + the parent's environment (the ROS wheels' bootstrap needs both)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env.get("ROS_DOMAIN_ID")
    return env


def _replay(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cmr_fusion_ros.cli", "replay", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), **kw)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def _cloud_bag(path: Path, n: int) -> tuple[Path, list[list]]:
    msgs, expected = [], []
    for i in range(n):
        stamp = T0 + 30 * MS + i * 80 * MS
        data = cloud_cdr(64, stamp, seed=i)
        msgs.append(("/cloud", CLOUD, stamp, data))
        points = TYPESTORE.deserialize_cdr(data, CLOUD).data
        expected.append([stamp, 64, hashlib.sha256(np.asarray(points).tobytes()).hexdigest()])
    write_bag(path, msgs, storage="mcap", qos_by_topic={"/cloud": qos("BEST_EFFORT", depth=5)})
    return path, expected


def test_replay_two_bags_with_clock_and_remap_reaches_a_subscriber(tmp_path):
    strings_bag = chatter_bag(tmp_path / "strings", n=12, start_ns=T0, period_ns=40 * MS)  # sqlite3
    clouds_bag, clouds = _cloud_bag(tmp_path / "clouds", 5)  # mcap
    sub = subprocess.Popen([sys.executable, str(SUBSCRIBER), "/replayed/chatter", "12", "/cloud", "5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    rep = None
    try:
        assert sub.stdout.readline().strip() == "READY"
        rep = _replay(str(strings_bag), str(clouds_bag), "--clock", "--remap", "/chatter:=/replayed/chatter",
                      "--wait-for-subscribers", "2", "--wait-timeout", "30", "--no-progress")
        out, err = sub.communicate(timeout=90)
        assert sub.returncode == 0, f"subscriber exit {sub.returncode}: {out[-1500:]} {err[-1500:]}"
        rep_out, rep_err = rep.communicate(timeout=60)
        assert rep.returncode == 0, rep_err[-2000:]
    finally:
        _stop(sub, *([rep] if rep else []))
    got = json.loads(out.strip().splitlines()[-1])
    assert got["strings"] == [f"msg {i}" for i in range(12)]
    assert got["clouds"] == clouds
    ticks = got["clock"]
    assert len(ticks) >= 2 and ticks == sorted(ticks), ticks[:20]
    assert T0 <= ticks[0] and ticks[-1] > ticks[0] and ticks[-1] <= T0 + 500 * MS
    assert "/replayed/chatter (from /chatter)" in rep_out and "replayed 17 messages" in rep_out


def test_sigint_stops_a_looping_replay_cleanly(tmp_path):
    bag = chatter_bag(tmp_path / "strings", n=10, start_ns=T0, period_ns=50 * MS)
    rep = _replay(str(bag), "--loop", "--clock")
    seen = threading.Event()
    err_text: list[str] = []

    def read_stderr() -> None:  # the progress bar shows up once messages are flowing
        for chunk in iter(lambda: os.read(rep.stderr.fileno(), 4096).decode(errors="replace"), ""):
            err_text.append(chunk)
            if "msgs" in "".join(err_text[-3:]):
                seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert seen.wait(60), "".join(err_text)[-2000:]
        time.sleep(0.3)
        rep.send_signal(signal.SIGINT)
        out = rep.stdout.read()
        assert rep.wait(timeout=30) == 0, "".join(err_text)[-2000:]
    finally:
        _stop(rep)
    reader.join(timeout=5)
    assert "stopped early (interrupted)" in out and "/chatter" in out


def test_wait_for_subscribers_gives_up_with_exit_3(tmp_path):
    bag = chatter_bag(tmp_path / "strings", n=3, topic="/nobody/listens/here")
    rep = _replay(str(bag), "--wait-for-subscribers", "1", "--wait-timeout", "0.5", "--no-progress")
    try:
        out, err = rep.communicate(timeout=60)
    finally:
        _stop(rep)
    assert rep.returncode == 3 and "0 of 1 subscriptions" in err and "replayed 0 messages" in out


def test_unimportable_types_are_skipped_with_one_warning(tmp_path):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 a\n", "nosuch_pkg/msg/Thing"))
    thing = bytes(store.serialize_cdr(store.types["nosuch_pkg/msg/Thing"](a=1), "nosuch_pkg/msg/Thing"))
    path = write_bag(tmp_path / "mixed", [("/thing", "nosuch_pkg/msg/Thing", T0, thing),
                                          ("/chatter", "std_msgs/msg/String", T0 + 1, string_cdr("x"))],
                     typestore=store)
    rep = _replay(str(path), "--rate", "0", "--no-progress")
    try:
        out, err = rep.communicate(timeout=60)
    finally:
        _stop(rep)
    assert rep.returncode == 0, err
    assert err.count("not importable") == 1 and "/thing (nosuch_pkg/msg/Thing)" in err
    assert "replayed 1 messages" in out and "skipped: type not importable" in out


def test_tf_static_is_latched_for_late_subscribers(tmp_path):
    # /tf_static first, then a message 4 s later keeps the replay (and its latched writer) alive
    bag = write_bag(tmp_path / "latched", [("/tf_static", "std_msgs/msg/String", T0, string_cdr("static transforms")),
                                          ("/chatter", "std_msgs/msg/String", T0 + 4_000_000_000, string_cdr("end"))])
    rep = _replay(str(bag))
    published = threading.Event()
    err_text: list[str] = []

    def read_stderr() -> None:  # the progress bar counts "1 msgs" once /tf_static went out
        for chunk in iter(lambda: os.read(rep.stderr.fileno(), 4096).decode(errors="replace"), ""):
            err_text.append(chunk)
            if "1 msgs" in "".join(err_text[-4:]):
                published.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    late = None
    try:
        assert published.wait(60), "".join(err_text)[-2000:]
        late = subprocess.Popen([sys.executable, str(Path(__file__).with_name("replay_late_subscriber.py")),
                                 "/tf_static"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        out, err = late.communicate(timeout=60)
        assert late.returncode == 0, err[-2000:]
        assert out.strip() == "static transforms"
        rep_out = rep.stdout.read()
        assert rep.wait(timeout=60) == 0
    finally:
        _stop(rep, *([late] if late else []))
    reader.join(timeout=5)
    assert "reliable, transient_local, depth 100 [latched]" in rep_out
