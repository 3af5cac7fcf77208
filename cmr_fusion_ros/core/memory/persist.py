"""On-disk format of the scene memory: manifest, snapshot, journal.

A memory directory holds::

    MANIFEST.json            magic, format version, dim, generation g, names of the files below
    snapshot-<g>.npz         the whole state at the start of generation g (absent for g = 0)
    index-<g>.faiss          the FAISS index of that snapshot (optional; rebuilt from the vectors when absent)
    journal-<g>.log          every add/delete since that snapshot
    LOCK                     flock'ed by the one process that writes

Journal: a 32-byte header (magic ``CMRJRNL1``, version, dim, generation, CRC32 of the header) then records
``<u32 payload length><u32 CRC32 of payload><payload>``. A record whose bytes run past the end of the file, or the
very last record when its CRC fails, is a torn tail left by a crash during a write: it is dropped (and truncated when
the memory is opened for writing). A bad record followed by more data is damage and fails the load.

Record types: add (one entry), delete (ids), and evict (ids deleted to make room for the ``n`` adds that follow it;
written by capacity eviction). An add and the evictions it caused are one unit: a journal that ends with evict
records and fewer than their ``n`` adds (a crash while writing the group) drops the whole group, so a crash never
leaves the evictions without the entries they made room for (older code wrote plain deletes before the add, and a
crash between them lost an entry; such journals still load as they are).

Every file that replaces another is written to a temporary name, fsynced, then ``os.replace``d, and the directory is
fsynced, so a crash at any moment leaves either the old or the new version.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import MemoryStoreError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Manifest",
    "JournalAdd",
    "JournalDelete",
    "JournalScan",
    "Snapshot",
    "encode_add",
    "encode_delete",
    "encode_evict",
    "fsync_dir",
    "read_journal",
    "read_manifest",
    "read_snapshot",
    "write_atomic",
    "write_journal_header",
    "write_manifest",
    "write_snapshot",
]

MAGIC = "cmr_fusion_ros.scene_memory"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
JOURNAL_MAGIC = b"CMRJRNL1"
_HEADER = struct.Struct("<8sIIQI")  # magic, version, dim, generation, crc(previous fields)
_HEADER_SIZE = 32  # _HEADER.size == 28, padded
_REC = struct.Struct("<II")  # payload length, crc32(payload)
_ADD = struct.Struct("<BQBqB7d")  # type, id, modality code, stamp, pose valid, pose
_T_ADD = 1
_T_DELETE = 2
_T_EVICT = 3
MAX_RECORD = 64 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write) -> None:
    """Write ``path`` through ``write(fileobj)`` to a temp file, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


# --- manifest -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    dim: int
    generation: int
    snapshot: str | None
    journal: str
    index: str | None = None
    index_params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "magic": MAGIC,
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "generation": self.generation,
            "snapshot": self.snapshot,
            "journal": self.journal,
            "index": self.index,
            "index_params": self.index_params,
        }


def write_manifest(directory: Path, manifest: Manifest) -> None:
    data = json.dumps(manifest.to_json(), indent=2).encode()
    write_atomic(directory / MANIFEST, lambda f: f.write(data))


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise MemoryStoreError(str(path), f"unreadable manifest: {err}") from err
    if not isinstance(raw, dict) or raw.get("magic") != MAGIC:
        raise MemoryStoreError(str(path), f"not a scene memory manifest (magic is not {MAGIC!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise MemoryStoreError(
            str(path), f"format version {raw.get('format_version')!r}; this program reads version {FORMAT_VERSION}"
        )
    try:
        m = Manifest(
            dim=int(raw["dim"]),
            generation=int(raw["generation"]),
            snapshot=raw["snapshot"],
            journal=str(raw["journal"]),
            index=raw.get("index"),
            index_params=dict(raw.get("index_params") or {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise MemoryStoreError(str(path), f"manifest field missing or malformed: {err}") from err
    for name in (m.snapshot, m.journal, m.index):
        if name is not None and (not isinstance(name, str) or "/" in name or name.startswith(".")):
            raise MemoryStoreError(str(path), f"manifest names an invalid file {name!r}")
    return m


# --- journal ------------------------------------------------------------------------------------------------------


def write_journal_header(f, dim: int, generation: int) -> None:
    head = _HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, dim, generation, 0)[:-4]
    f.write(head + struct.pack("<I", zlib.crc32(head)) + b"\0" * (_HEADER_SIZE - _HEADER.size))


def _record(payload: bytes) -> bytes:
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


def _enc_str(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise MemoryStoreError("entry", f"string longer than 65535 bytes: {s[:40]!r}...")
    return struct.pack("<H", len(b)) + b


def encode_add(
    entry_id: int,
    modality_code: int,
    stamp_ns: int,
    pose: tuple[float, ...] | None,
    topic: str,
    frame_id: str,
    session: str,
    vector: np.ndarray,
) -> bytes:
    p = pose if pose is not None else (0.0,) * 7
    payload = (
        _ADD.pack(_T_ADD, entry_id, modality_code, stamp_ns, pose is not None, *p)
        + _enc_str(topic)
        + _enc_str(frame_id)
        + _enc_str(session)
        + np.ascontiguousarray(vector, dtype="<f4").tobytes()
    )
    return _record(payload)


def encode_delete(ids: np.ndarray) -> bytes:
    ids = np.asarray(ids, dtype="<u8")
    return _record(struct.pack("<BI", _T_DELETE, ids.shape[0]) + ids.tobytes())


def encode_evict(ids: np.ndarray, adds: int) -> bytes:
    """Deletes that make room for the ``adds`` add records written right after (see the module doc)."""
    ids = np.asarray(ids, dtype="<u8")
    return _record(struct.pack("<BII", _T_EVICT, adds, ids.shape[0]) + ids.tobytes())


@dataclass
class JournalAdd:
    id: int
    modality_code: int
    stamp_ns: int
    pose: tuple[float, ...] | None
    topic: str
    frame_id: str
    session: str
    vector: np.ndarray


@dataclass
class JournalDelete:
    ids: np.ndarray
    adds: int = 0  # an eviction: the adds it made room for, written right after it (0: a plain delete)


@dataclass
class JournalScan:
    ops: list[JournalAdd | JournalDelete]
    good_bytes: int  # file length up to the end of the last good record
    torn_bytes: int  # bytes after it (a torn tail), 0 when the file ends cleanly


def _dec_str(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<H", buf, pos)
    pos += 2
    if pos + n > len(buf):
        raise ValueError("string runs past the record")
    return bytes(buf[pos : pos + n]).decode("utf-8"), pos + n


def _decode(payload: memoryview, dim: int) -> JournalAdd | JournalDelete:
    kind = payload[0]
    if kind == _T_ADD:
        t, eid, mod, stamp, valid, *pose = _ADD.unpack_from(payload, 0)
        pos = _ADD.size
        topic, pos = _dec_str(payload, pos)
        frame, pos = _dec_str(payload, pos)
        session, pos = _dec_str(payload, pos)
        if len(payload) - pos != 4 * dim:
            raise ValueError(f"vector of {len(payload) - pos} bytes, expected {4 * dim}")
        vec = np.frombuffer(payload[pos:], dtype="<f4").astype(np.float32)
        return JournalAdd(eid, mod, stamp, tuple(pose) if valid else None, topic, frame, session, vec)
    if kind == _T_DELETE:
        (count,) = struct.unpack_from("<I", payload, 1)
        if len(payload) != 5 + 8 * count:
            raise ValueError("delete record length does not match its count")
        return JournalDelete(np.frombuffer(payload[5:], dtype="<u8").astype(np.int64))
    if kind == _T_EVICT:
        adds, count = struct.unpack_from("<II", payload, 1)
        if len(payload) != 9 + 8 * count or adds < 1:
            raise ValueError("evict record length does not match its count, or it makes room for no add")
        return JournalDelete(np.frombuffer(payload[9:], dtype="<u8").astype(np.int64), adds)
    raise ValueError(f"unknown record type {kind}")


def read_journal(path: Path, dim: int, generation: int) -> JournalScan:
    """Parse a journal. Raises MemoryStoreError on a foreign header or damage before the tail."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise MemoryStoreError(str(path), f"cannot read journal: {err}") from err
    if len(data) < _HEADER_SIZE:
        raise MemoryStoreError(str(path), f"journal shorter than its {_HEADER_SIZE}-byte header")
    magic, version, jdim, gen, crc = _HEADER.unpack_from(data, 0)
    if magic != JOURNAL_MAGIC or zlib.crc32(data[: _HEADER.size - 4]) != crc:
        raise MemoryStoreError(str(path), "not a scene memory journal (bad magic or header checksum)")
    if version != FORMAT_VERSION or jdim != dim or gen != generation:
        raise MemoryStoreError(
            str(path),
            f"journal header says version {version}, dim {jdim}, generation {gen}; "
            f"expected {FORMAT_VERSION}, {dim}, {generation}",
        )
    buf = memoryview(data)
    pos = _HEADER_SIZE
    ops: list[JournalAdd | JournalDelete] = []
    end = len(data)
    # an eviction group not yet complete: [byte, op index, adds it made room for, adds seen so far]
    group: list[int] | None = None
    while pos < end:
        if pos + _REC.size > end:
            break  # torn: record header cut
        length, crc = _REC.unpack_from(buf, pos)
        body = pos + _REC.size
        if length > MAX_RECORD or body + length > end:
            break  # torn: payload cut (or a garbage length at the tail)
        payload = buf[body : body + length]
        last = body + length == end
        if zlib.crc32(payload) != crc:
            if last:
                break  # torn: the final record's bytes did not all reach the disk
            raise MemoryStoreError(str(path), f"record at byte {pos} fails its checksum and is not the last one")
        try:
            op = _decode(payload, dim)
        except (ValueError, struct.error, UnicodeDecodeError, IndexError) as err:
            raise MemoryStoreError(str(path), f"record at byte {pos} is malformed: {err}") from err
        if isinstance(op, JournalDelete) and op.adds:  # an eviction: its group's adds follow it
            if group is None:
                group = [pos, len(ops), op.adds, 0]
            elif group[3] or group[2] != op.adds:
                raise MemoryStoreError(str(path), f"record at byte {pos}: an eviction inside an unfinished group")
        elif group is not None:
            if not isinstance(op, JournalAdd):
                raise MemoryStoreError(str(path), f"record at byte {pos}: a delete inside an eviction group")
            group[3] += 1
            if group[3] == group[2]:
                group = None
        ops.append(op)
        pos = body + length
    if group is not None:  # the adds the last evictions made room for did not all reach the disk: drop the group
        del ops[group[1]:]
        pos = group[0]
    return JournalScan(ops=ops, good_bytes=pos, torn_bytes=end - pos)


# --- snapshot -----------------------------------------------------------------------------------------------------

_SNAPSHOT_ARRAYS = {
    "ids": (np.int64, 1),
    "modality": (np.uint8, 1),
    "stamp_ns": (np.int64, 1),
    "pose": (np.float64, 2),
    "pose_valid": (np.bool_, 1),
    "topic": (np.int32, 1),
    "frame": (np.int32, 1),
    "session": (np.int32, 1),
    "alive": (np.bool_, 1),
    "vectors": (np.float32, 2),
}


@dataclass
class Snapshot:
    arrays: dict[str, np.ndarray]  # the keys of _SNAPSHOT_ARRAYS, one row per slot
    strings: dict[str, list[str]]  # "topic", "frame", "session" tables
    next_id: int
    generation: int


def write_snapshot(path: Path, snap: Snapshot) -> None:
    meta = json.dumps(
        {"magic": MAGIC, "format_version": FORMAT_VERSION, "next_id": snap.next_id, "generation": snap.generation,
         "strings": snap.strings}
    ).encode()

    def write(f):
        np.savez(f, meta=np.frombuffer(meta, dtype=np.uint8), **snap.arrays)

    write_atomic(path, write)


def read_snapshot(path: Path, dim: int, generation: int) -> Snapshot:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in _SNAPSHOT_ARRAYS}
            meta = json.loads(z["meta"].tobytes())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MemoryStoreError(str(path), f"unreadable snapshot: {err}") from err
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC or meta.get("format_version") != FORMAT_VERSION:
        raise MemoryStoreError(str(path), "not a scene memory snapshot of this format version")
    if meta.get("generation") != generation:
        raise MemoryStoreError(str(path), f"snapshot generation {meta.get('generation')} != manifest {generation}")
    n = arrays["ids"].shape[0]
    for name, (dtype, ndim) in _SNAPSHOT_ARRAYS.items():
        a = arrays[name]
        if a.dtype != dtype or a.ndim != ndim or a.shape[0] != n:
            raise MemoryStoreError(str(path), f"snapshot array {name!r} has dtype {a.dtype} shape {a.shape}")
    if arrays["vectors"].shape[1] != dim or arrays["pose"].shape[1] != 7:
        raise MemoryStoreError(str(path), f"snapshot vectors have dim {arrays['vectors'].shape[1]}, expected {dim}")
    strings = meta.get("strings")
    if not isinstance(strings, dict) or any(not isinstance(strings.get(k), list) for k in ("topic", "frame", "session")):
        raise MemoryStoreError(str(path), "snapshot string tables missing")
    for key in ("topic", "frame", "session"):
        col = arrays[key]
        if n and (col.min() < 0 or col.max() >= len(strings[key])):
            raise MemoryStoreError(str(path), f"snapshot {key} indexes out of range")
    if n and (np.diff(arrays["ids"]) <= 0).any():
        raise MemoryStoreError(str(path), "snapshot ids are not strictly increasing")
    return Snapshot(arrays=arrays, strings={k: list(strings[k]) for k in ("topic", "frame", "session")},
                    next_id=int(meta.get("next_id", 1)), generation=generation)
