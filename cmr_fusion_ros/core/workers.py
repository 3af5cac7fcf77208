"""Calls run ahead in worker processes, one per key, each key's calls in the order they were sent (no ROS).

Offline processing decodes and embeds each stream's frames ahead of its in-order commits
(:func:`cmr_fusion_ros.bag.offline.process_bags`, ``--look-ahead``). Threads do not overlap that work on two cores:
most of it is short numpy and Python steps that hold the GIL (measured on the seed-7 town with two free cores: a
thread per topic took 9.8 CPU seconds against 6.6 in one thread, in the same wall time). So each key gets a child
process, forked from the caller: it starts with a copy of everything the caller holds (encoders, the bag's message
types) and keeps its own state from call to call (a stream's multi-scan history).

A call is a tuple of plain data plus an optional ``bytes`` payload (a raw message, sent without pickling);
``handler(call, payload)`` runs it in the key's child and returns picklable data. An error the handler raises comes
back as :class:`~cmr_fusion_ros.core.errors.WorkerError` (so handlers return expected outcomes as values). With
``processes=False``, or where ``fork`` is not available, every call runs at once in the caller through the same
handler and the same :class:`Ticket`; an error is then raised as it is when the result is taken.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from cmr_fusion_ros.core.errors import WorkerError

__all__ = ["FORK_AVAILABLE", "KeyedWorkers", "Ticket"]

FORK_AVAILABLE = "fork" in multiprocessing.get_all_start_methods()
Handler = Callable[[tuple, "bytes | None"], Any]


class Ticket:
    """The result of one call, taken with :meth:`result` (waits for the key's child)."""

    __slots__ = ("_worker", "_ident", "_ok", "_value", "_done")

    def __init__(self, worker: "_Child | None", ident: int) -> None:
        self._worker, self._ident = worker, ident
        self._ok, self._value, self._done = True, None, False

    @classmethod
    def done(cls, value: Any) -> "Ticket":
        """A ticket whose result is ``value`` already (a call that did not need to be made)."""
        ticket = cls(None, 0)
        ticket._set(True, value)
        return ticket

    def _set(self, ok: bool, value: Any) -> None:
        self._ok, self._value, self._done = ok, value, True

    def result(self) -> Any:
        if not self._done:
            assert self._worker is not None
            self._set(*self._worker.take(self._ident))
        if not self._ok:
            if isinstance(self._value, BaseException):
                raise self._value
            raise WorkerError(self._worker.name if self._worker else "inline", self._value)
        return self._value


class _Child:
    """One forked child and the parent's end of its pipe. At most ``max_unread`` calls are on the way at once (sent,
    result not read): the child writes its results straight into the pipe, and this bound keeps them within the
    pipe's buffer, so the child never waits on a full pipe while the parent waits to send it a call."""

    def __init__(self, ctx: Any, handler: Handler, name: str, result_bytes: int) -> None:
        self.name = name
        self.conn, child_end = ctx.Pipe(duplex=True)
        buffer = min(_widen(self.conn, socket.SO_RCVBUF), _widen(child_end, socket.SO_SNDBUF))
        self.max_unread = max(1, buffer // max(1, result_bytes))
        self.process = ctx.Process(target=_serve, args=(handler, child_end, self.conn), name=name, daemon=True)
        self.process.start()
        child_end.close()
        self.unread = 0
        self.results: dict[int, tuple[bool, Any]] = {}

    def send(self, ident: int, call: tuple, payload: bytes | None) -> None:
        while self.unread >= self.max_unread:
            self._receive()
        try:
            self.conn.send((ident, call, payload is not None))
            if payload is not None:
                self.conn.send_bytes(payload)
        except OSError as err:
            raise WorkerError(self.name, f"cannot send a call: {err}") from err
        self.unread += 1

    def _receive(self) -> None:
        try:
            got, ok, value = self.conn.recv()
        except (EOFError, OSError) as err:
            code = self.process.exitcode
            raise WorkerError(self.name, f"exited ({'still running' if code is None else f'code {code}'})") from err
        self.unread -= 1
        self.results[got] = (ok, value)

    def take(self, ident: int) -> tuple[bool, Any]:
        while ident not in self.results:
            self._receive()
        return self.results.pop(ident)

    def stop(self, timeout_s: float, cancel: bool) -> None:
        if not cancel:
            try:
                self.conn.send(None)  # after the calls already sent
            except OSError:
                pass
            self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout_s)
        self.conn.close()


SOCKET_BUFFER = 4 << 20  # bytes asked for each way (the system caps it: net.core.wmem_max / rmem_max)


def _widen(conn: Any, option: int) -> int:
    """Ask for larger socket buffers on a pipe end (fewer stops while a raw message goes through); the bytes of
    ``option`` (SO_RCVBUF / SO_SNDBUF) it has now."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        return sock.getsockopt(socket.SOL_SOCKET, option) // 2  # Linux reports twice what it holds for data


def _serve(handler: Handler, conn: Any, parent_end: Any) -> None:
    """The child: calls in order from the pipe, each result written back at once."""
    parent_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops its children
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        ident, call, has_payload = msg
        payload = conn.recv_bytes() if has_payload else None
        try:
            result = (ident, True, handler(call, payload))
        except Exception as err:  # sent back as text: the caller raises WorkerError
            result = (ident, False, f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        try:
            conn.send(result)
        except (OSError, ValueError):
            return  # the parent is gone
        except Exception as err:  # an unpicklable result: the caller gets a clear error instead of waiting
            conn.send((ident, False, f"cannot send the result: {type(err).__name__}: {err}"))


class KeyedWorkers:
    """A forked child per key in ``keys`` running ``handler`` (see the module doc); ``close`` (or leaving the
    ``with`` block) stops them. ``forked`` tells whether calls run in children. ``result_bytes``: the most a result
    takes pickled (bounds the calls on the way to one child to what its pipe holds, see :class:`_Child`)."""

    def __init__(self, handler: Handler, keys: Iterable[Hashable], *, processes: bool = True,
                 name: str = "worker", result_bytes: int = 65536) -> None:
        self.handler = handler
        self.keys = list(keys)
        self.forked = bool(processes and FORK_AVAILABLE and self.keys)
        self._children: dict[Hashable, _Child] = {}
        self._next = 0
        self._closed = False
        if self.forked:
            sys.stdout.flush()  # a child must not write out the parent's buffered output a second time
            sys.stderr.flush()
            ctx = multiprocessing.get_context("fork")
            gc.freeze()  # the children's garbage collector leaves the inherited objects alone: fewer copied pages
            try:
                for i, key in enumerate(self.keys):
                    self._children[key] = _Child(ctx, handler, f"{name}-{i}", result_bytes)
            except BaseException:
                self.close(cancel=True)
                raise
            finally:
                gc.unfreeze()

    @property
    def pids(self) -> list[int]:
        """Process ids of the children (none when calls run in the caller)."""
        return [c.process.pid for c in self._children.values() if c.process.pid is not None]

    def submit(self, key: Hashable, call: tuple, payload: bytes | None = None) -> Ticket:
        """Run ``handler(call, payload)`` after the calls sent earlier with ``key`` (a key given at the start)."""
        if self._closed:
            raise WorkerError("workers", "a call after close")
        self._next += 1
        if not self.forked:
            ticket = Ticket(None, self._next)
            try:
                ticket._set(True, self.handler(call, payload))
            except Exception as err:  # raised when the result is taken, as from a child
                ticket._set(False, err)
            return ticket
        child = self._children.get(key)
        if child is None:
            raise WorkerError("workers", f"no worker for key {key!r} (keys: {self.keys})")
        child.send(self._next, call, payload)
        return Ticket(child, self._next)

    def close(self, *, cancel: bool = False, timeout_s: float = 10.0) -> None:
        """Stop the children once the calls sent have run (``cancel``: at once, dropping them)."""
        self._closed = True
        for child in self._children.values():
            child.stop(timeout_s, cancel)

    def __enter__(self) -> "KeyedWorkers":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)
