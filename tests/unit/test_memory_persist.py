"""Persistence: save -> load equality, journal replay, torn tails, damaged and foreign directories."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import MemoryStoreError
from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory
from cmr_fusion_ros.core.memory import persist
from cmr_fusion_ros.core.types import Modality, Pose
from cmr_fusion_ros.eval.bench_memory import clustered_vectors

DIM = 16
MODS = ("camera", "lidar", "radar")


def cfg(backend="exact", **persistence) -> MemoryConfig:
    p = {"flush_interval_s": 3600.0, "snapshot_every_n": 0}
    p.update(persistence)
    return MemoryConfig.from_dict({
        "dim": DIM,
        "index": {"backend": backend, "hnsw_m": 8, "ivf_nlist": 8, "ivf_nprobe": 8},
        "admission": {"enabled": False},
        "persistence": p,
    })


def add_some(mem: SceneMemory, n: int, start: int = 0, seed: int = 0) -> None:
    db, _ = clustered_vectors(n, DIM, seed=seed)
    for i in range(n):
        j = start + i
        mem.add(db[i], MODS[j % 3], f"/t{j % 2}", f"frame{j % 3}", j * 1000,
                Pose(j, -j, 0.5, 0, 0, 0, 1) if j % 4 else None, f"session{j // 100}")


def state(mem: SceneMemory):
    ids = mem.ids().tolist()
    entries = [mem.get(i) for i in ids]
    vectors = np.stack([e.vector for e in entries]) if entries else np.empty((0, DIM))
    return ids, entries, vectors


def tree_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.mark.parametrize("backend", ["exact", "faiss_flat", "faiss_hnsw", "faiss_ivf"])
def test_save_load_equality(tmp_path, backend):
    d = tmp_path / "mem"
    queries = clustered_vectors(10, DIM, seed=5, n_queries=10)[1]
    with SceneMemory.open(d, cfg(backend, snapshot_every_n=150)) as mem:
        add_some(mem, 400)
        mem.clear(["lidar"])
        add_some(mem, 120, start=400, seed=1)
        before = state(mem)
        results = [[(n.entry, n.score) for n in mem.search(q, 8)] for q in queries]
        assert mem.stats().snapshots >= 2
    with SceneMemory.open(d, cfg(backend)) as again:
        after = state(again)
        assert after[0] == before[0] and after[1] == before[1]
        np.testing.assert_array_equal(after[2], before[2])
        for q, want in zip(queries, results):
            got = [(n.entry, n.score) for n in again.search(q, 8)]
            assert [e for e, _ in got] == [e for e, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
        s = again.stats()
        assert s.index_loaded == (backend in ("faiss_hnsw", "faiss_ivf"))
        assert s.next_id == 521
        assert again.add(queries[0], "radar", "/x", "f", 1).id == 521  # ids are never reused


def test_journal_only_reload_and_unflushed_loss(tmp_path):
    d = tmp_path / "mem"
    mem = SceneMemory.open(d, cfg())
    add_some(mem, 50)
    assert mem.flush() == 50
    add_some(mem, 10, start=50)  # not flushed: a crash now loses exactly these
    ro = SceneMemory.open(d, cfg(), read_only=True)  # a second reader, as after a crash
    assert ro.ids().tolist() == list(range(1, 51))
    assert state(ro)[1] == state(mem)[1][:50]
    with pytest.raises(MemoryStoreError, match="read-only"):
        ro.add(np.ones(DIM), "camera", "/c", "f", 0)
    ro.close()
    mem.close()
    with SceneMemory.open(d, cfg()) as again:
        assert len(again) == 60


def test_flush_interval_zero_writes_every_add(tmp_path):
    d = tmp_path / "mem"
    mem = SceneMemory.open(d, cfg(flush_interval_s=0.0))
    add_some(mem, 5)
    assert mem.stats().pending_records == 0
    assert len(SceneMemory.open(d, cfg(), read_only=True)) == 5
    mem.close()


def journal_of(d: Path) -> Path:
    return d / json.loads((d / persist.MANIFEST).read_text())["journal"]


@pytest.mark.parametrize("tear", ["cut_header", "cut_payload", "bad_crc_last"])
def test_torn_tail_is_truncated_and_reported(tmp_path, tear):
    d = tmp_path / "mem"
    mem = SceneMemory.open(d, cfg())
    add_some(mem, 30)
    mem.flush()
    mem.close = lambda: None  # simulate a crash: no final snapshot, lock released with the fd below
    os.close(mem._fd)
    os.close(mem._lock_fd)
    j = journal_of(d)
    good = j.stat().st_size
    rec = persist.encode_add(31, 0, 31000, None, "/t", "f", "s", np.ones(DIM, np.float32))
    if tear == "cut_header":
        tail = rec[:5]
    elif tear == "cut_payload":
        tail = rec[:-7]
    else:
        tail = rec[:-1] + bytes([rec[-1] ^ 0xFF])
    with open(j, "ab") as f:
        f.write(tail)
    ro = SceneMemory.open(d, cfg(), read_only=True)
    assert len(ro) == 30 and ro.stats().torn_tail_bytes == len(tail)
    assert j.stat().st_size == good + len(tail)  # read-only touches nothing
    ro.close()
    again = SceneMemory.open(d, cfg())
    assert len(again) == 30 and again.stats().torn_tail_bytes == len(tail)
    assert j.stat().st_size == good  # truncated
    add_some(again, 5, start=30)
    again.flush()
    os.close(again._fd)
    os.close(again._lock_fd)
    third = SceneMemory.open(d, cfg())
    assert third.ids().tolist() == list(range(1, 36)) and third.stats().torn_tail_bytes == 0
    third.close()


def make_store(tmp_path) -> Path:
    d = tmp_path / "mem"
    with SceneMemory.open(d, cfg("faiss_hnsw", snapshot_every_n=40)) as mem:
        add_some(mem, 100)
        mem.flush()
        # leave some records in the journal after the last snapshot
    mem = SceneMemory.open(d, cfg("faiss_hnsw"))
    add_some(mem, 20, start=100)
    mem.flush()
    os.close(mem._fd)
    os.close(mem._lock_fd)
    return d


def damage_mid_journal(d: Path) -> None:
    j = journal_of(d)
    data = bytearray(j.read_bytes())
    data[len(data) // 2] ^= 0x55
    j.write_bytes(bytes(data))


def damage_snapshot(d: Path) -> None:
    snap = d / json.loads((d / persist.MANIFEST).read_text())["snapshot"]
    data = snap.read_bytes()
    snap.write_bytes(data[: len(data) // 2])


def edit_manifest(**changes):
    def damage(d: Path) -> None:
        m = json.loads((d / persist.MANIFEST).read_text())
        m.update(changes)
        (d / persist.MANIFEST).write_text(json.dumps(m))
    return damage


def remove_journal(d: Path) -> None:
    journal_of(d).unlink()


def foreign_journal_header(d: Path) -> None:
    j = journal_of(d)
    data = bytearray(j.read_bytes())
    data[0:8] = b"NOTMINE!"
    j.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (damage_mid_journal, "checksum|malformed"),
        (damage_snapshot, "unreadable snapshot"),
        (edit_manifest(magic="something_else"), "not a scene memory manifest"),
        (edit_manifest(format_version=99), "format version 99"),
        (edit_manifest(dim=32), "dim 32"),
        (edit_manifest(generation=7), "generation"),
        (edit_manifest(journal="../etc"), "invalid file"),
        (remove_journal, "cannot read journal"),
        (foreign_journal_header, "not a scene memory journal"),
    ],
)
@pytest.mark.parametrize("copied_without_lock", [False, True])
def test_damaged_directory_fails_clearly_and_is_untouched(tmp_path, damage, match, copied_without_lock):
    d = make_store(tmp_path)
    damage(d)
    if copied_without_lock:
        (d / "LOCK").unlink()
    before = tree_digest(d)
    for read_only in (True, False):
        with pytest.raises(MemoryStoreError, match=match):
            SceneMemory.open(d, cfg("faiss_hnsw"), read_only=read_only)
    assert tree_digest(d) == before


def test_foreign_directory_is_refused_and_untouched(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"\xff\xd8 not a memory")
    before = tree_digest(d)
    with pytest.raises(MemoryStoreError, match="no MANIFEST.json"):
        SceneMemory.open(d, cfg())
    assert tree_digest(d) == before and sorted(p.name for p in d.iterdir()) == ["holiday.jpg"]
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(MemoryStoreError, match="not a directory"):
        SceneMemory.open(f, cfg())
    with pytest.raises(MemoryStoreError, match="missing or empty"):
        SceneMemory.open(tmp_path / "nothing", cfg(), read_only=True)


def test_damaged_index_file_is_rebuilt(tmp_path):
    d = tmp_path / "mem"
    with SceneMemory.open(d, cfg("faiss_hnsw")) as mem:
        add_some(mem, 200)
        want = [n.entry.id for n in mem.search(np.ones(DIM), 5)]
    index = d / json.loads((d / persist.MANIFEST).read_text())["index"]
    index.write_bytes(b"garbage")
    with SceneMemory.open(d, cfg("faiss_hnsw")) as again:
        assert not again.stats().index_loaded
        assert [n.entry.id for n in again.search(np.ones(DIM), 5)] == want
    # a backend change rebuilds too
    with SceneMemory.open(d, cfg("exact")) as exact:
        assert len(exact) == 200


def test_second_writer_is_refused(tmp_path):
    d = tmp_path / "mem"
    mem = SceneMemory.open(d, cfg())
    with pytest.raises(MemoryStoreError, match="in use"):
        SceneMemory.open(d, cfg())
    mem.close()
    SceneMemory.open(d, cfg()).close()


def test_orphans_of_an_interrupted_snapshot_are_ignored_then_removed(tmp_path):
    d = tmp_path / "mem"
    with SceneMemory.open(d, cfg()) as mem:
        add_some(mem, 10)
    (d / "snapshot-000099.npz.tmp").write_bytes(b"half written")
    (d / "journal-000099.log").write_bytes(b"from a snapshot that never reached the manifest")
    (d / "notes.txt").write_text("not ours")
    with SceneMemory.open(d, cfg()) as again:
        assert len(again) == 10
    names = {p.name for p in d.iterdir()}
    assert "snapshot-000099.npz.tmp" not in names and "journal-000099.log" not in names and "notes.txt" in names


def test_memory_without_directory_does_not_persist():
    mem = SceneMemory(cfg())
    add_some(mem, 3)
    assert mem.flush() == 0 and mem.snapshot() is False and mem.directory is None
    mem.close()
    with pytest.raises(MemoryStoreError, match="closed"):
        mem.add(np.ones(DIM), Modality.CAMERA, "/c", "f", 0)


def test_creation_killed_before_the_first_manifest_starts_afresh(tmp_path):
    """SIGKILL between taking the LOCK and writing MANIFEST.json leaves LOCK (and maybe the empty journal)."""
    from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory

    from cmr_fusion_ros.core.memory.scene import never_created

    for leftovers in (["LOCK"], ["LOCK", "journal-000000.log"], ["LOCK", "journal-000000.log.tmp"]):
        d = tmp_path / "_".join(leftovers).replace(".", "_")
        d.mkdir()
        for name in leftovers:
            (d / name).write_bytes(b"")
        assert never_created(d)
        with SceneMemory.open(d, MemoryConfig(dim=4)) as mem:
            assert len(mem) == 0
            mem.add([1.0, 0.0, 0.0, 0.0], "lidar", "/l", "l", 1)
        with SceneMemory.open(d, MemoryConfig(dim=4)) as mem:
            assert len(mem) == 1
        assert not never_created(d)
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "LOCK").write_bytes(b"")
    (other / "notes.txt").write_text("mine")
    import pytest

    from cmr_fusion_ros.core.errors import MemoryStoreError

    with pytest.raises(MemoryStoreError, match="has files but no MANIFEST.json"):
        SceneMemory.open(other, MemoryConfig(dim=4))
    assert (other / "notes.txt").read_text() == "mine"


def test_a_directory_under_home_is_the_users_not_a_tilde_folder(tmp_path, monkeypatch):
    # the default memory.persistence.directory is ~/.ros/cmr_fusion/memory: SceneMemory(config) itself expands it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    mem = SceneMemory(MemoryConfig.from_dict({"dim": DIM, "persistence": {"directory": "~/mem"}}))
    add_some(mem, 2)
    mem.close()
    assert (tmp_path / "home" / "mem" / "MANIFEST.json").is_file() and not (tmp_path / "~").exists()


def _capped(cap: int, eviction: str) -> MemoryConfig:
    return MemoryConfig.from_dict({
        "dim": DIM, "index": {"backend": "exact"}, "admission": {"enabled": False},
        "persistence": {"flush_interval_s": 3600.0, "snapshot_every_n": 0},
        "capacity": {"max_entries": cap, "eviction": eviction}})


def _crash(mem: SceneMemory) -> None:
    mem.close = lambda: None  # no final snapshot; the lock goes with its fd
    os.close(mem._fd)
    os.close(mem._lock_fd)


@pytest.mark.parametrize("eviction", ["oldest", "oldest_same_modality"])
@pytest.mark.parametrize("batch", [False, True])
def test_a_crash_inside_an_eviction_group_keeps_the_evicted_entries(tmp_path, eviction, batch):
    """An add that evicts is one unit on disk: the journal cut anywhere inside the evictions + adds it wrote reloads
    as before that add (the crash test once found an evicted entry gone and its replacement not there)."""
    d = tmp_path / "mem"
    mem = SceneMemory.open(d, _capped(6, eviction))
    add_some(mem, 6)
    mem.flush()
    j = journal_of(d)
    before = j.stat().st_size
    db, _ = clustered_vectors(3, DIM, seed=5)
    if batch:  # three camera entries: same-modality eviction takes both cameras and then the oldest (two records)
        mem.add_batch(db, "camera", "/t0", "f", [7000, 8000, 9000])
    else:
        mem.add(db[0], "camera", "/t0", "f", 7000)
    mem.flush()
    after = j.stat().st_size
    full = mem.ids().tolist()
    _crash(mem)
    assert len(full) == 6 and full[-1] > 6  # the add evicted
    data = j.read_bytes()
    groups = [op for op in persist.read_journal(j, DIM, 0).ops if isinstance(op, persist.JournalDelete)]
    assert groups and all(op.adds == (3 if batch else 1) for op in groups)  # written as an eviction group
    for cut in range(before + 1, after):  # every place a crash can cut the group's bytes
        j.write_bytes(data[:cut])
        ro = SceneMemory.open(d, _capped(6, eviction), read_only=True)
        assert ro.ids().tolist() == list(range(1, 7)), cut
        assert ro.stats().torn_tail_bytes == cut - before
        ro.close()
    j.write_bytes(data[: (before + after) // 2])
    again = SceneMemory.open(d, _capped(6, eviction))  # a writer drops the torn group from the file
    assert again.ids().tolist() == list(range(1, 7)) and j.stat().st_size == before
    _crash(again)
    j.write_bytes(data)
    assert SceneMemory.open(d, _capped(6, eviction), read_only=True).ids().tolist() == full


def test_old_journals_with_deletes_before_the_add_still_load(tmp_path):
    d = tmp_path / "mem"
    mem = SceneMemory.open(d, cfg())
    add_some(mem, 4)
    mem.flush()
    _crash(mem)
    vec = np.ones(DIM, np.float32)
    with open(journal_of(d), "ab") as f:  # what the code before eviction groups wrote: a delete, then the add
        f.write(persist.encode_delete(np.array([1])) + persist.encode_add(5, 0, 5000, None, "/t", "f", "s", vec))
    assert SceneMemory.open(d, cfg(), read_only=True).ids().tolist() == [2, 3, 4, 5]
