"""Start a graph of ROS 2 nodes as child processes and supervise them: ``cmr-fusion launch`` without ``ros2 launch``.

* every child gets this process's environment plus the project's ROS defaults (localhost discovery, the Fast DDS
  profile, rmw_fastrtps_cpp, only where not set) and ``PYTHONUNBUFFERED=1``; each runs in its own process group, so a
  Ctrl-C in the terminal reaches only the launcher, which forwards it once;
* each child's stdout and stderr lines are printed with its name in front;
* SIGINT/SIGTERM to the launcher -> SIGINT to every child (the nodes save their memory on shutdown), then SIGTERM after
  ``sigint_timeout`` and SIGKILL after ``sigterm_timeout`` more; a second Ctrl-C skips straight to the next step;
* a child that exits on its own is reported by name and exit code, the others are stopped, and the launcher exits 1;
* exit 0 only when every child stopped cleanly (exit code 0) after being asked to.

No ROS import: the children are plain processes (see :mod:`cmr_fusion_ros.ros.graph` for the node commands).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from cmr_fusion_ros.core.signals import install_signal_watcher

__all__ = ["ChildSpec", "ChildResult", "Launcher", "child_environment", "describe_returncode"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]


@dataclass
class ChildResult:
    name: str
    pid: int
    returncode: int | None = None
    unexpected: bool = False  # exited before the launcher asked it to
    signals_sent: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not self.unexpected


def describe_returncode(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _package_path_entry() -> str | None:
    """The folder holding this package when it runs from a source checkout (not installed into site-packages)."""
    import site

    root = str(Path(__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in site.getsitepackages() + [site.getusersitepackages()]}
    return None if root in installed else root


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the nodes: ``base`` (default ``os.environ``) + ROS defaults where unset + unbuffered I/O."""
    from cmr_fusion_ros.rosenv import apply_ros_defaults

    env = dict(os.environ if base is None else base)
    apply_ros_defaults(env)
    env["PYTHONUNBUFFERED"] = "1"
    entry = _package_path_entry()
    if entry is not None:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if entry not in parts:
            env["PYTHONPATH"] = os.pathsep.join([entry, *parts])
    return env


def _parent_death_signal() -> Callable[[], None] | None:
    """preexec_fn for Linux: the child gets SIGTERM if the launcher dies without stopping it (e.g. SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1  # noqa: N806

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return preexec


class Launcher:
    """Runs ``children`` until a signal, a child's exit, or :meth:`request_stop`; see the module docstring."""

    def __init__(self, children: Sequence[ChildSpec], *, env: Mapping[str, str] | None = None,
                 out: TextIO | None = None, log: Callable[[str], None] | None = None,
                 sigint_timeout: float = 10.0, sigterm_timeout: float = 5.0, poll_s: float = 0.05) -> None:
        names = [c.name for c in children]
        if not children or len(set(names)) != len(names):
            raise ValueError(f"children need distinct names, got {names}")
        self.children = list(children)
        self.env = dict(child_environment() if env is None else env)
        self.out = out or sys.stdout
        self.log = log or (lambda text: print(f"[launcher] {text}", file=sys.stderr, flush=True))
        self.sigint_timeout = sigint_timeout
        self.sigterm_timeout = sigterm_timeout
        self.poll_s = poll_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.results: dict[str, ChildResult] = {}
        self._readers: list[threading.Thread] = []
        self._out_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_requests = 0
        self._width = max(len(n) for n in names)

    # ---------------------------------------------------------------- control

    def request_stop(self) -> None:
        """Ask for a clean stop; asking again during the stop skips to the next escalation step."""
        self._stop_requests += 1
        self._wake.set()

    # ---------------------------------------------------------------- output

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        prefix = f"[{name}]".ljust(self._width + 2) + " "
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self._out_lock:
                    self.out.write(prefix + line + "\n")
                    self.out.flush()
        except (OSError, ValueError):  # the launcher's own output went away
            pass
        finally:
            stream.close()

    # ---------------------------------------------------------------- lifecycle

    def _start_all(self) -> bool:
        preexec = _parent_death_signal()
        for child in self.children:
            try:
                proc = subprocess.Popen(list(child.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env=self.env, process_group=0,
                                        preexec_fn=preexec)
            except OSError as err:
                self.log(f"cannot start {child.name}: {err}")
                return False
            self.procs[child.name] = proc
            self.results[child.name] = ChildResult(child.name, proc.pid)
            self.log(f"started {child.name} (pid {proc.pid})")
        # readers only after every fork: no thread holds a lock while a child is created
        for name, proc in self.procs.items():
            t = threading.Thread(target=self._pump, args=(name, proc.stdout), name=f"out-{name}", daemon=True)
            t.start()
            self._readers.append(t)
        return True

    def _alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def _signal(self, names: Sequence[str], sig: signal.Signals) -> None:
        for name in names:
            proc = self.procs[name]
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                    self.results[name].signals_sent.append(sig.name)
                except ProcessLookupError:
                    pass

    def _wait_all(self, timeout: float, requests_at_start: int) -> bool:
        """Wait until every child exited (True) or the timeout passed / another stop request came (False)."""
        deadline = time.monotonic() + timeout
        while self._alive():
            if self._stop_requests > requests_at_start or time.monotonic() >= deadline:
                return False
            self._wake.clear()
            self._wake.wait(self.poll_s)
        return True

    def _stop_children(self) -> None:
        steps = ((signal.SIGINT, self.sigint_timeout), (signal.SIGTERM, self.sigterm_timeout), (signal.SIGKILL, 10.0))
        for sig, timeout in steps:
            alive = self._alive()
            if not alive:
                return
            if sig is not signal.SIGINT:
                self.log(f"{', '.join(alive)} still running; sending {sig.name}")
            self._signal(alive, sig)
            if self._wait_all(timeout, self._stop_requests):
                return

    def run(self) -> int:
        """Start, supervise, stop; returns the exit code (0 = every child stopped cleanly when asked)."""
        restore = self._install_signal_handlers()
        try:
            started = self._start_all()
            failed: list[str] = []
            while started and not self._stop_requests:
                for name, proc in self.procs.items():
                    code = proc.poll()
                    if code is not None:
                        self.results[name].unexpected = True
                        self.results[name].returncode = code
                        failed.append(name)
                if failed:
                    for name in failed:
                        self.log(f"{name} exited unexpectedly ({describe_returncode(self.results[name].returncode)});"
                                 f" stopping the others")
                    break
                self._wake.clear()
                self._wake.wait(self.poll_s)
            if started and not failed:
                self.log("stopping: SIGINT to " + ", ".join(self._alive()))
            self._stop_children()
            for name, proc in self.procs.items():
                if self.results[name].returncode is None:
                    self.results[name].returncode = proc.wait()
            for t in self._readers:
                t.join(timeout=2.0)
            return self._report(started)
        finally:
            restore()

    def _report(self, started: bool) -> int:
        ok = started
        for name, res in self.results.items():
            how = describe_returncode(res.returncode)
            if res.unexpected:
                self.log(f"{name}: {how} (unexpected)")
                ok = False
            elif res.returncode != 0:
                sent = " after " + ", ".join(res.signals_sent) if res.signals_sent else ""
                self.log(f"{name}: did not stop cleanly: {how}{sent}")
                ok = False
            else:
                self.log(f"{name}: stopped cleanly")
        return 0 if ok else 1

    def _install_signal_handlers(self) -> Callable[[], None]:
        # request_stop runs in a watcher thread: a handler calling Event.set can hang the main thread if the signal
        # lands while it is inside self._wake.wait/clear (core/signals.py)
        return install_signal_watcher(lambda _signum: self.request_stop(), name="launch-signals")
