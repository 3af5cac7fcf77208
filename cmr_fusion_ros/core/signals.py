"""SIGINT / SIGTERM handling that never takes a lock inside the signal handler (no ROS).

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread holds a lock:
inside ``threading.Event.wait``/``clear``/``set`` (the event's condition uses a plain, non-reentrant lock), or
inside an earlier handler that was interrupted by the next signal. A handler that then calls ``Event.set()`` waits
for a lock its own thread holds: the process hangs and ignores every later SIGINT/SIGTERM (seen once with
``memory-server``; the launcher and the replayer waited on events the same way).

:func:`install_signal_watcher` keeps the handler lock-free: CPython's C-level handler writes each signal's number to
a wake-up socket (:func:`signal.set_wakeup_fd`); a daemon thread reading that socket calls ``on_signal(signum)``
from its own thread, where taking a lock is safe (it waits until the main thread lets go of it). The Python-level
handler only raises ``KeyboardInterrupt`` on a repeated SIGINT when asked to (the user's escape hatch).
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterable

__all__ = ["install_signal_watcher"]

_SENTINEL = b"\x00"  # no signal has number 0: tells the watcher thread to stop


def install_signal_watcher(on_signal: Callable[[int], None],
                           signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM), *,
                           interrupt_on_repeat: bool = False,
                           name: str = "signal-watcher") -> Callable[[], None]:
    """Call ``on_signal(signum)`` from a watcher thread for each of ``signals``; returns the function that puts the
    previous handlers and wake-up fd back (and stops the thread). ``interrupt_on_repeat``: a second SIGINT raises
    ``KeyboardInterrupt`` in the main thread (counted by the handler itself: the watcher thread may act on the first
    one before the main thread runs its handler, so "already stopping" cannot be read from the event).

    Outside the main thread (where Python allows no handlers) nothing is installed and the restorer does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wanted = {int(s) for s in signals}
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    sigints = [0]

    def handler(signum: int, _frame: object) -> None:  # no lock here (see the module doc)
        if signum == signal.SIGINT:
            sigints[0] += 1
            if interrupt_on_repeat and sigints[0] > 1:
                raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in wanted}
    for s in wanted:
        signal.signal(s, handler)

    def watch(_keep: socket.socket) -> None:  # holds the writing end too: its fd must outlive a dropped restorer
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum == 0:
                    return
                if signum in wanted:
                    on_signal(signum)

    thread = threading.Thread(target=watch, args=(writer,), name=name, daemon=True)
    thread.start()
    done = False

    def restore() -> None:
        nonlocal done
        if done:
            return
        done = True
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(previous_fd)
        try:
            writer.send(_SENTINEL)
        except OSError:
            pass
        thread.join(1.0)
        writer.close()
        reader.close()

    return restore
