"""KeyedWorkers: a thread per key, each key's calls in order, results through futures; inline without threads."""

from __future__ import annotations

import threading
import time

import pytest

from cmr_fusion_ros.core.workers import KeyedWorkers


def test_each_key_runs_in_its_own_thread_in_submission_order():
    seen: dict[str, list[int]] = {"a": [], "b": []}
    threads: dict[str, set[str]] = {"a": set(), "b": set()}

    def call(key, i):
        time.sleep(0.001 * ((i * 7) % 3))  # uneven durations: order must come from the queue, not from luck
        seen[key].append(i)
        threads[key].add(threading.current_thread().name)
        return key, i

    with KeyedWorkers(name="t") as workers:
        futures = [workers.submit(k, call, k, i) for i in range(20) for k in ("a", "b")]
        assert [f.result(timeout=10) for f in futures] == [(k, i) for i in range(20) for k in ("a", "b")]
        assert sorted(workers.keys) == ["a", "b"]
    assert seen == {"a": list(range(20)), "b": list(range(20))}
    assert all(len(names) == 1 for names in threads.values()) and threads["a"] != threads["b"]
    assert threading.main_thread().name not in threads["a"] | threads["b"]


def test_without_threads_each_call_runs_at_once_in_the_caller():
    order = []
    workers = KeyedWorkers(threads=False)
    done = workers.submit("a", lambda: order.append(threading.current_thread().name) or 7)
    assert order == [threading.current_thread().name] and done.done() and done.result() == 7
    failed = workers.submit("a", lambda: 1 / 0)
    assert failed.done()
    with pytest.raises(ZeroDivisionError):
        failed.result()
    assert workers.keys == []
    workers.close()
    with pytest.raises(RuntimeError, match="after close"):
        workers.submit("a", int)


def test_errors_reach_the_future_and_close_with_cancel_drops_the_calls_not_started():
    gate = threading.Event()
    with KeyedWorkers() as workers:
        failed = workers.submit("a", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(timeout=10)
        blocked = workers.submit("b", gate.wait, 10)
        queued = workers.submit("b", int)
        threading.Timer(0.05, gate.set).start()
        workers.close(cancel=True)  # waits for the running call, drops the queued one
    assert blocked.result() is True and queued.cancelled()
