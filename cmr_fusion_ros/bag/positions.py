"""Where each message's bytes lie in an MCAP bag, so that a message can be read where it is needed (no ROS).

Offline processing reads a bag in log-time order in one process and decodes each sensor message in a worker process
(:mod:`cmr_fusion_ros.bag.offline`). Through ``rosbags``' reader every raw message is copied several times in the
main process (chunk, record, payload) and then sent through a pipe to the worker: 458 MB for a 120 s default-rig
session, the largest piece of the main process' work, which is the critical path. This module reads only the bag's
indexes (the chunk index of the summary, which ``rosbags`` has read already, and each chunk's message index records)
and gives, for each message, the file and byte offset of its record; :meth:`MessageReader.read` then reads the
one message's bytes with ``os.pread``, in whichever process needs them, and checks the record's header (record kind,
channel, log time; a length the file holds) so that a damaged file gives a clear error instead of wrong data. A
chunk's CRC, which ``rosbags`` checks when it reads a whole chunk, is not checked here (it covers the whole chunk);
damage inside a message's bytes shows when the message is deserialised or decoded (a bad message, counted).

The order is the one ``rosbags.highlevel.AnyReader.messages`` gives: log time, then (for equal log times) bag, file,
and place in the file; ``rosbags`` orders by log time, then chunk, then place in the chunk, and equal log times in
different bags in an order of its own. ``rosbags`` does not expose positions, which is why this small reader of the
MCAP index exists (MCAP specification: https://mcap.dev/spec).

Only what this can read exactly is done here: rosbag2 bags whose files are all MCAP with chunk indexes and
uncompressed chunks, without per-message compression. For anything else :func:`message_positions` returns None and
the caller reads messages through ``rosbags`` as before (sqlite3, compressed chunks, rosbag1, unindexed files).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import BagError

__all__ = ["MessagePositions", "MessageReader", "message_positions", "raw_messages"]

_MESSAGE_INDEX = 0x07
_MESSAGE = 0x05
_RECORD_HEAD = struct.Struct("<BQHIQQ")  # opcode, record length, channel id, sequence, log time, publish time
_INDEX_HEAD = struct.Struct("<BQHI")  # opcode, record length, channel id, byte length of the (log time, offset) pairs


@dataclass(frozen=True)
class MessagePositions:
    """The messages of some connections, in reading order: ``connections[conn[i]]`` at ``log_ns[i]``, its record at
    byte ``offset[i]`` of ``files[file[i]]`` with MCAP channel id ``channel[i]``."""

    files: list[str]
    connections: list[Any]
    conn: np.ndarray
    log_ns: np.ndarray
    file: np.ndarray
    offset: np.ndarray
    channel: np.ndarray

    def __len__(self) -> int:
        return len(self.log_ns)

    def __iter__(self) -> Iterator[tuple[Any, int, tuple[int, int, int, int]]]:
        """``(connection, log_ns, where)``; ``where`` = (file index, record offset, channel id, log_ns) for
        :meth:`MessageReader.read`."""
        conns = self.connections
        for c, t, f, o, ch in zip(self.conn.tolist(), self.log_ns.tolist(), self.file.tolist(), self.offset.tolist(),
                                  self.channel.tolist()):
            yield conns[c], t, (f, o, ch, t)


def _storages(reader: Any) -> list[Any] | None:
    """The MCAP storages of one ``rosbags`` rosbag2 reader, or None when it is something else (or compresses
    messages one by one)."""
    from rosbags.rosbag2.storage_mcap import McapReader

    storage = getattr(reader, "storage", None)
    if isinstance(storage, McapReader):
        return [storage]
    storages = getattr(storage, "storages", None)
    metadata = getattr(storage, "metadata", None)
    if not storages or metadata is None or getattr(metadata, "compression_mode", None):
        return None
    return list(storages) if all(isinstance(s, McapReader) for s in storages) else None


def message_positions(reader: Any, connections: Sequence[Any]) -> MessagePositions | None:
    """The positions of ``connections``' messages (connections of the ``rosbags.highlevel.AnyReader`` ``reader``),
    or None when a bag is not one this module reads (see the module doc). Raises :class:`BagError` when an index
    record is damaged."""
    files: list[str] = []
    parts: list[tuple[np.ndarray, ...]] = []
    wanted = list(connections)
    for bag_reader in getattr(reader, "readers", []):
        storages = _storages(bag_reader)
        if storages is None:
            return None
        for storage in storages:
            # a storage's channels that a wanted connection reads (rosbags matches them the same way)
            channels: dict[int, int] = {}
            for sc in storage.connections:
                for i, c in enumerate(wanted):
                    if c.owner is bag_reader.storage or c.owner is storage:
                        if c.topic == sc.topic and c.msgtype == sc.msgtype and c.ext == sc.ext and (
                                not c.digest or not sc.digest or c.digest == sc.digest):
                            channels[sc.id] = i
            if not storage.chunks:
                return None  # no chunk index: only a full scan finds the messages
            if not channels:
                continue
            if any(chunk.compression for chunk in storage.chunks):
                return None
            file_index = len(files)
            files.append(str(storage.path))
            parts.extend(_chunk_positions(storage, channels, file_index))
    if not parts:
        empty = np.zeros(0, np.int64)
        return MessagePositions(files, wanted, empty, empty, empty, empty, empty)
    conn, log_ns, file, offset, channel = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((offset, file, log_ns))  # last key first: log time, then file, then place in the file
    return MessagePositions(files, wanted, conn[order], log_ns[order], file[order], offset[order], channel[order])


def _chunk_positions(storage: Any, channels: dict[int, int], file_index: int) -> Iterator[tuple[np.ndarray, ...]]:
    path = str(storage.path)
    fd = os.open(path, os.O_RDONLY)
    try:
        for chunk in storage.chunks:
            # the chunk's records start after its header: opcode, length, start, end, uncompressed size, crc,
            # compression (length-prefixed), records length
            records = chunk.chunk_start_offset + 1 + 8 + 8 + 8 + 8 + 4 + 4 + len(chunk.compression) + 8
            wanted = [(c, at) for c, at in chunk.message_index_offsets.items()
                      if c in channels and chunk.channel_count.get(c, 0)]
            if not wanted:
                continue
            base = chunk.chunk_start_offset + chunk.chunk_length  # the chunk's message indexes follow it
            block = os.pread(fd, chunk.message_index_length, base)  # one read for all of them
            for channel_id, index_offset in wanted:
                start = index_offset - base
                if start < 0 or start + _INDEX_HEAD.size > len(block):
                    raise BagError(path, f"message index at byte {index_offset} is outside its chunk's indexes")
                op, length, got_channel, nbytes = _INDEX_HEAD.unpack_from(block, start)
                if op != _MESSAGE_INDEX or got_channel != channel_id or nbytes % 16 or nbytes + 6 != length:
                    raise BagError(path, f"damaged message index at byte {index_offset} (channel {channel_id})")
                first = start + _INDEX_HEAD.size
                if first + nbytes > len(block):
                    raise BagError(path, f"message index at byte {index_offset} is cut off")
                table = np.frombuffer(block, "<u8", count=nbytes // 8, offset=first).reshape(-1, 2).astype(np.int64)
                rel = table[:, 1]
                if len(rel) and (rel.min() < 0 or rel.max() >= chunk.uncompressed_size):
                    raise BagError(path, f"message index at byte {index_offset} points outside its chunk")
                n = len(table)
                yield (np.full(n, channels[channel_id], np.int64), table[:, 0], np.full(n, file_index, np.int64),
                       records + rel, np.full(n, channel_id, np.int64))
    finally:
        os.close(fd)


class MessageReader:
    """Reads one message's bytes at a position from :class:`MessagePositions` (its own file descriptors: make one
    per process). One ``pread`` per message as a rule: it reads the record's header and as many bytes as the
    channel's previous message had (a stream's messages are mostly of one size), and a second read only for the
    rest of a larger one."""

    def __init__(self, files: Sequence[str]) -> None:
        self.files = list(files)
        self._fds: dict[int, int] = {}
        self._size: dict[tuple[int, int], int] = {}  # (file, channel) -> the size of its last message

    def read(self, where: tuple[int, int, int, int]) -> memoryview:
        """The raw (CDR) bytes of the message at ``where`` = (file index, record offset, channel id, log time);
        :class:`BagError` when the record there is not that message."""
        file_index, offset, channel_id, log_ns = where
        fd = self._fds.get(file_index)
        path = self.files[file_index]
        if fd is None:
            fd = self._fds[file_index] = os.open(path, os.O_RDONLY)
        head_size = _RECORD_HEAD.size
        buf = os.pread(fd, head_size + self._size.get((file_index, channel_id), 0), offset)
        if len(buf) < head_size:
            raise BagError(path, f"message record at byte {offset} is cut off")
        op, length, got_channel, _seq, got_log, _pub = _RECORD_HEAD.unpack_from(buf)
        if op != _MESSAGE or got_channel != channel_id or got_log != log_ns or length < 22:
            raise BagError(path, f"damaged message record at byte {offset}: not the indexed message (channel "
                                 f"{channel_id}, log time {log_ns})")
        size = length - 22
        self._size[(file_index, channel_id)] = size
        if len(buf) < head_size + size:  # larger than the last one: the rest
            buf += os.pread(fd, head_size + size - len(buf), offset + len(buf))
            if len(buf) != head_size + size:
                raise BagError(path, f"message record at byte {offset} is cut off ({len(buf) - head_size} of {size} "
                                     "bytes)")
        return memoryview(buf)[head_size:head_size + size]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "MessageReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_messages(reader: Any, connections: Sequence[Any]) -> Iterator[tuple[Any, int, bytes | memoryview]]:
    """``(connection, log_ns, raw)`` of ``connections``, in ``reader.messages`` order: read record by record where the
    bags' index gives the places (only those messages' bytes, not every chunk they share), else through ``rosbags``."""
    positions = message_positions(reader, connections)
    if positions is None:
        yield from reader.messages(connections=connections)
        return
    with MessageReader(positions.files) as at:
        for c, t, where in positions:
            yield c, t, at.read(where)
