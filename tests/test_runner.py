"""The runner, the worker's only loop: serial (one slot, on the loop's thread) or pools by job kind."""

from __future__ import annotations

import threading

import pytest
import redis

from jobs.protocol import JobKind
from workers.handlers import HANDLERS
from workers.runner import SHORT_JOB_THREADS, Runner


def test_a_serial_runner_has_one_slot_and_runs_the_job_on_the_callers_thread() -> None:
    runner = Runner.for_concurrency(1)
    assert runner.is_serial
    assert runner.wait_for_slot(0) and not runner.wait_for_slot(0)  # one slot only
    ran_on: list[threading.Thread] = []
    runner.submit(JobKind.ASK, lambda: ran_on.append(threading.current_thread()))
    assert ran_on == [threading.current_thread()]
    assert runner.wait_for_slot(0)  # the job's end freed its slot

    def redis_away() -> None:
        raise redis.ConnectionError("gone")

    with pytest.raises(redis.ConnectionError):  # the loop sees it, reconnects and takes the job back
        runner.submit(JobKind.ASK, redis_away)
    assert runner.wait_for_slot(0)


def test_a_concurrent_runner_holds_its_asks_and_the_short_jobs() -> None:
    runner = Runner.for_concurrency(3)
    assert not runner.is_serial
    taken = 0
    while runner.wait_for_slot(0):
        taken += 1
    assert taken == 3 + SHORT_JOB_THREADS
    done = threading.Event()
    runner.submit(JobKind.DOCS, done.set)  # on the short jobs' pool, not the caller's thread
    runner.drain()
    assert done.is_set() and runner.wait_for_slot(0)


def test_every_job_kind_has_its_handler() -> None:
    assert set(HANDLERS) == set(JobKind)
