"""KeyedWorkers: a forked child per key, each key's calls in order, state kept in the child between calls, errors
as WorkerError; without processes the same handler runs at once in the caller."""

from __future__ import annotations

import os

import pytest

from cmr_fusion_ros.core.errors import WorkerError
from cmr_fusion_ros.core.workers import FORK_AVAILABLE, KeyedWorkers

needs_fork = pytest.mark.skipif(not FORK_AVAILABLE, reason="no fork on this platform")


def make_handler():
    state: dict[str, list] = {}  # a copy per child: each key's calls see only their own

    def handler(call, payload):
        op, key, value = call
        if op == "add":
            state.setdefault(key, []).append(value if payload is None else (value, payload))
            return os.getpid(), list(state[key])
        if op == "fail":
            raise ValueError(f"bad value {value}")
        return None

    return handler


@needs_fork
def test_each_key_runs_in_its_own_child_in_order_with_its_own_state():
    with KeyedWorkers(make_handler(), ["a", "b"], name="t") as workers:
        assert workers.forked and len(set(workers.pids)) == 2 and os.getpid() not in workers.pids
        tickets = [(k, i, workers.submit(k, ("add", k, i), b"raw" if i == 3 else None)) for i in range(6)
                   for k in ("a", "b")]
        results = {(k, i): t.result() for k, i, t in reversed(tickets)}  # taken in any order
    for k in ("a", "b"):
        pid, seen = results[(k, 5)]
        assert seen == [0, 1, 2, (3, b"raw"), 4, 5]
        assert {results[(k, i)][0] for i in range(6)} == {pid} and pid != os.getpid()
    assert results[("a", 5)][0] != results[("b", 5)][0]


@needs_fork
def test_a_failing_call_is_a_worker_error_and_the_worker_goes_on():
    with KeyedWorkers(make_handler(), ["a"]) as workers:
        failed = workers.submit("a", ("fail", "a", 7))
        after = workers.submit("a", ("add", "a", 1))
        with pytest.raises(WorkerError, match=r"worker worker-0: ValueError: bad value 7"):
            failed.result()
        assert after.result()[1] == [1]
        with pytest.raises(WorkerError, match="no worker for key 'zz'"):
            workers.submit("zz", ("add", "zz", 1))
    with pytest.raises(WorkerError, match="a call after close"):
        workers.submit("a", ("add", "a", 2))


@needs_fork
def test_a_child_that_dies_is_a_clear_error():
    def handler(call, payload):
        os._exit(3)

    workers = KeyedWorkers(handler, ["a"])
    try:
        with pytest.raises(WorkerError, match=r"worker worker-0: exited"):
            workers.submit("a", ("x",)).result()
    finally:
        workers.close(cancel=True)


def test_without_processes_each_call_runs_at_once_in_the_caller():
    workers = KeyedWorkers(make_handler(), ["a", "b"], processes=False)
    assert not workers.forked and workers.pids == []
    first = workers.submit("a", ("add", "a", 1))
    assert first.result() == (os.getpid(), [1])
    failed = workers.submit("b", ("fail", "b", 2))
    with pytest.raises(ValueError, match="bad value 2"):  # raised as it is, when the result is taken
        failed.result()
    workers.close()
