"""Crash test: SIGKILL a writer process at random moments, many times; reload; no corruption, no flushed loss."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cmr_fusion_ros.core.memory import SceneMemory

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import memory_crash_writer as writer  # noqa: E402

KILLS = 24
CAPACITY = 400


def start_writer(directory: Path, backend: str, seed: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1]), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(HERE / "memory_crash_writer.py"), str(directory), backend, str(seed), str(CAPACITY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


def read_lines(proc: subprocess.Popen, until: float, stop_at: bytes | None = None) -> list[str]:
    """Lines the writer printed before ``until`` (monotonic), its death, or a complete line starting ``stop_at``."""
    out = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < until:
        if stop_at is not None and out.startswith(stop_at) and b"\n" in out:
            break
        ready, _, _ = select.select([fd], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out.decode().splitlines()


def check(directory: Path, flushed: int, read_only: bool) -> tuple[int, int]:
    mem = SceneMemory.open(directory, writer.config("exact", CAPACITY), read_only=read_only)
    try:
        ids = mem.ids().tolist()
        last = ids[-1] if ids else 0
        assert last >= flushed, f"flushed entry {flushed} lost (last stored {last})"
        # oldest eviction: exactly the newest min(CAPACITY, last) ids survive
        assert ids == list(range(max(1, last - CAPACITY + 1), last + 1))
        for i in ids[:: max(1, len(ids) // 40)] + ids[-3:]:
            e = mem.get(i)
            v = writer.vector_for(i)
            np.testing.assert_allclose(e.vector, v / np.linalg.norm(v), rtol=1e-6)
            assert e.stamp_ns == i and e.modality.value == writer.MODS[i % 3] and e.topic == f"/topic{i % 2}"
            assert (e.pose is not None) == bool(i % 2)
        probe = writer.vector_for(ids[-1])
        assert mem.search(probe, 1)[0].entry.id == ids[-1]
        return last, mem.stats().torn_tail_bytes
    finally:
        mem.close()


def test_sigkill_at_random_moments_loses_nothing_flushed(tmp_path):
    directory = tmp_path / "mem"
    rng = np.random.default_rng(12345)
    flushed = 0
    torn = 0
    leftovers = 0  # kills that interrupted a snapshot (files the manifest does not name were left behind)
    started = time.monotonic()
    for kill in range(KILLS):
        backend = ("exact", "faiss_hnsw")[kill % 2]
        proc = start_writer(directory, backend, kill)
        try:
            lines = read_lines(proc, time.monotonic() + 60, stop_at=b"READY")
            rest = lines[1:]
            assert lines and lines[0].startswith("READY"), proc.stderr.read().decode()[-2000:]
            assert int(lines[0].split()[1]) >= flushed + 1
            deadline = time.monotonic() + float(rng.uniform(0.02, 0.5))
            lines = rest + read_lines(proc, deadline)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            lines += read_lines(proc, time.monotonic() + 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, "the writer died on its own"
        for line in lines:
            if line.startswith("FLUSHED"):
                flushed = max(flushed, int(line.split()[1]))
        manifest = json.loads((directory / "MANIFEST.json").read_text())
        referenced = {manifest["snapshot"], manifest["journal"], manifest["index"], "MANIFEST.json"}
        leftovers += any(p.name not in referenced and p.name != "LOCK" for p in directory.iterdir())
        # reload as a reader (touches nothing) most times, as a writer (recovers the tail) every third time
        last, torn_bytes = check(directory, flushed, read_only=kill % 3 != 0)
        torn += torn_bytes > 0
    assert flushed > CAPACITY, "the writer should have outrun the capacity"
    elapsed = time.monotonic() - started
    print(f"{KILLS} kills in {elapsed:.1f} s, last flushed id {flushed}, reloads that met a torn tail: {torn}, "
          f"kills that left an interrupted snapshot behind: {leftovers}")
