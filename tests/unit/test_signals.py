"""SIGINT/SIGTERM handling without locks in the handler (core/signals.py), for the launcher and the replayer.

Each case runs in a child interpreter under a timeout: the failure being guarded against is a hang (a handler that
calls ``Event.set`` while its own thread holds the event's lock waits forever)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, timeout: float = 30.0) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_signal_landing_while_the_main_thread_holds_the_events_lock_still_sets_it() -> None:
    # the window of the hang, made certain: the main thread holds stop's internal lock when SIGINT and SIGTERM come
    out = _run("""
        import os, signal, threading, time
        from cmr_fusion_ros.core.signals import install_signal_watcher
        stop = threading.Event()
        seen = []
        restore = install_signal_watcher(lambda s: (seen.append(s), stop.set()))
        with stop._cond:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handlers run here, inside the locked section
        assert stop.wait(10), "stop not set"
        time.sleep(0.2)
        restore()
        print(sorted(seen))
    """)
    assert out.strip() == f"[{2}, {15}]"


def test_handlers_and_wakeup_fd_are_put_back_and_a_repeated_sigint_interrupts() -> None:
    out = _run("""
        import os, signal, threading, time
        from cmr_fusion_ros.core.signals import install_signal_watcher
        stop = threading.Event()
        restore = install_signal_watcher(lambda s: stop.set(), interrupt_on_repeat=True)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(10)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            print("no interrupt")
        except KeyboardInterrupt:
            print("interrupted")
        restore()
        restore()  # twice: harmless
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, signal.set_wakeup_fd(-1))
    """)
    assert out.split() == ["interrupted", "True", "-1"]


def test_outside_the_main_thread_nothing_is_installed() -> None:
    import threading

    from cmr_fusion_ros.core.signals import install_signal_watcher

    result = []
    t = threading.Thread(target=lambda: result.append(install_signal_watcher(lambda s: None)))
    t.start()
    t.join()
    assert result[0]() is None


@pytest.mark.parametrize("what", ["launcher", "replayer"])
def test_launcher_and_replayer_stop_requests_survive_a_signal_inside_their_wait(what: str) -> None:
    # the launcher's main loop and the replayer's clock wait on events; a signal inside that wait's locked section
    # must still reach them
    if what == "launcher":
        code = """
            import os, signal, sys, threading, time
            from cmr_fusion_ros.launcher import ChildSpec, Launcher
            child = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); time.sleep(30)"
            launcher = Launcher([ChildSpec("sleeper", (sys.executable, "-c", child))],
                                out=open(os.devnull, "w"), log=lambda text: None, sigint_timeout=10.0)
            wake, clear, fired = launcher._wake, launcher._wake.clear, []
            def clear_with_a_signal_inside():  # the main loop's own clear(), SIGINT landing while it holds the lock
                if not fired and launcher.procs:
                    fired.append(1)
                    with wake._cond:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(0.2)
                clear()
            wake.clear = clear_with_a_signal_inside
            print(launcher.run(), launcher.results["sleeper"].signals_sent)
        """
        expected = "0 ['SIGINT']"
    else:
        code = """
            import os, signal, threading, time
            from cmr_fusion_ros.ros.replayer import _install_stop_handlers
            from cmr_fusion_ros.bag.replay import MonotonicClock
            stop = threading.Event()
            restore = _install_stop_handlers(stop)
            clock = MonotonicClock(stop)
            with stop._cond:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
            print(clock.wait(10))
            restore()
        """
        expected = "True"
    assert _run(code).strip().splitlines()[-1] == expected


def test_a_dropped_restorer_keeps_the_watcher_working() -> None:
    # memory-server installs the watcher for its whole life and keeps no restorer
    out = _run("""
        import gc, os, signal, threading
        from cmr_fusion_ros.core.signals import install_signal_watcher
        stop = threading.Event()
        install_signal_watcher(lambda s: stop.set())
        gc.collect()
        os.kill(os.getpid(), signal.SIGTERM)
        print(stop.wait(10))
    """)
    assert out.strip() == "True"


def test_a_first_sigint_is_never_taken_for_a_repeat_when_the_watcher_acts_first() -> None:
    # the watcher thread may set the event before the main thread runs the Python-level handler (here: the main
    # thread is inside matrix products, which release the GIL); the handler must still see a first SIGINT
    out = _run("""
        import os, signal, threading, time
        import numpy as np
        from cmr_fusion_ros.core.signals import install_signal_watcher
        stop = threading.Event()
        order = []
        restore = install_signal_watcher(lambda s: (order.append("watcher"), stop.set()), interrupt_on_repeat=True)
        a = np.ones((700, 700))
        threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t = time.monotonic()
        while time.monotonic() - t < 1.0:
            a @ a
        print(stop.is_set(), "no interrupt")
        restore()
    """)
    assert out.split() == ["True", "no", "interrupt"]
