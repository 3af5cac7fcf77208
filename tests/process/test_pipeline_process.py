"""The product as users meet it, as separate processes over DDS: `cmr-fusion launch` (fusion_node with the shipped
models), `cmr-fusion replay --clock` of the sample bag, a separate subscriber process; SIGINT stops everything with
exit 0 and a saved memory. Then `cmr-fusion process` of the same bag gives the same events offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file, render_parameter_file
from cmr_fusion_ros.core.memory import SceneMemory

REPO = Path(__file__).resolve().parents[2]
BAG = REPO / "bags" / "sample_town" / "session_00"
LISTENER = Path(__file__).with_name("pipeline_listener.py")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    assert e["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    return e


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cmr_fusion_ros.cli", *args]


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    """config/demo.yaml with reliable sensor subscriptions and deep queues (nothing may be dropped for the parity
    check), the memory in a temp folder, and the models folder from CMR_TEST_MODELS when set."""
    tmp = tmp_path_factory.mktemp("params")
    p = load_parameter_file(REPO / "config" / "demo.yaml", "fusion_node")
    for s in p["streams"].values():
        s["reliability"], s["queue_size"], s["depth"] = "reliable", 200, 200
    p["memory"]["persistence"]["directory"] = str(tmp / "live_memory")
    p["session"] = "parity"
    if os.environ.get("CMR_TEST_MODELS"):
        p["encoders"]["models_dir"] = os.environ["CMR_TEST_MODELS"]
    FusionConfig.from_dict(p)
    path = tmp / "params.yaml"
    path.write_text(render_parameter_file({"fusion_node": p}))
    return path


def key(e: dict) -> tuple:
    return (e["stamp_ns"], e["query_modality"], e["match_modality"], e["match_stamp_ns"], e["rank"])


def test_launch_replay_subscribe_sigint_and_offline_parity(params, tmp_path):
    assert (BAG / "metadata.yaml").is_file()
    listener = subprocess.Popen([sys.executable, str(LISTENER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env())
    launcher = subprocess.Popen(cli("launch", "--params", str(params), "--use-sim-time"), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env())
    try:
        assert listener.stdout.readline().strip() == "READY"
        replay = subprocess.run(cli("replay", str(BAG), "--clock", "--rate", "3", "--wait-for-subscribers", "4",
                                    "--wait-timeout", "90", "--no-progress"), capture_output=True, text=True,
                                env=env(), timeout=300)
        assert replay.returncode == 0, replay.stderr[-2000:]
        time.sleep(3.0)
        assert launcher.poll() is None, launcher.stdout.read()[-3000:]
        launcher.send_signal(signal.SIGINT)
        log, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, log[-3000:]
        assert "stopped cleanly" in log
    finally:
        for p in (launcher, listener):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        out, err = listener.communicate(timeout=30)
    assert listener.returncode == 0, err[-2000:]
    live = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert live, f"no match events received; launcher log:\n{log[-3000:]}"
    assert all(e["score"] >= 0.0 and e["match_stamp_ns"] < e["stamp_ns"] for e in live)

    cfg = FusionConfig.from_yaml(params, "fusion_node")
    with SceneMemory.open(cfg.memory.persistence.directory, cfg.memory) as saved:
        assert len(saved) > 0  # saved on SIGINT
        live_entries = len(saved)

    done = subprocess.run(cli("process", str(BAG), "--out", str(tmp_path / "offline"), "--params", str(params),
                              "--memory", str(tmp_path / "offline_memory"), "--no-progress"),
                          capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    offline = [json.loads(line) for line in (tmp_path / "offline" / "events.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "offline" / "summary.json").read_text())
    assert summary["memory_entries"] == live_entries
    assert sorted(map(key, live)) == sorted(map(key, offline))
    # the ids name the same entries (the live node embeds its streams concurrently, so frames of about the same
    # instant may be inserted in another order than the bag's and numbered differently)
    with SceneMemory.open(cfg.memory.persistence.directory, cfg.memory) as live_mem, \
            SceneMemory.open(str(tmp_path / "offline_memory"), cfg.memory) as offline_mem:
        def entry(memory, i):  # id 0: the query was not inserted (a near-duplicate)
            got = memory.get(i) if i else None
            assert got is not None or i == 0, i
            return None if got is None else (got.modality, got.topic, got.stamp_ns)

        by_key = {key(e): e for e in offline}
        for e in live:
            o = by_key[key(e)]
            assert abs(e["score"] - o["score"]) < 1e-4
            assert entry(live_mem, e["match_id"]) == entry(offline_mem, o["match_id"])
            assert entry(live_mem, e["query_id"]) == entry(offline_mem, o["query_id"])
