"""The worker's only loop, and how many jobs it holds at once and which thread runs each.

:meth:`Runner.serve` takes a job whenever a slot is free, admits it, and runs it. With concurrency 1
the runner is serial: one slot, and the job runs on the loop's own thread (:meth:`Runner.serial`).
With more, asks run on a pool sized by the concurrency; an ingest on a thread of its own (it embeds
for minutes and must not hold up answers); the short jobs (docs, models, status, forget, reset, set
model) on a small pool of their own, so they never wait behind generation: at most
``concurrency + SHORT_JOB_THREADS`` jobs are in hand, each under its own lease. A job taken while its
pool is busy waits there, still leased, for a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import redis

from core.embedding import Embedder
from core.generation import Generator
from jobs.protocol import Job, JobKind
from workers.delivery import Delivery, JobQueue

log = logging.getLogger(__name__)

SHORT_JOB_THREADS = 2
TRIM_EVERY_S = 30.0
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)
AUTO_CONCURRENCY_MAX = 64  # an automatic choice never holds more asks than this


@dataclass(eq=False)  # one per job in hand, kept in a set by identity
class JobContext:
    """One job in hand: what used to be the worker's "current job" fields, now one per job."""

    delivery: Delivery
    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)  # timeout, lost lease, shutdown
    is_handing_back: bool = False  # shutting down: the job goes back to the queue instead of finishing

    def hand_back(self) -> None:
        """Stop the job's work; its end hands the entry back rather than finishing it."""
        self.is_handing_back = True
        self.cancel.set()


def max_concurrency(generator: Generator) -> int:
    """Calls of ``generator.stream`` that may run at once (1 unless the backend says more)."""
    return max(1, int(getattr(generator, "max_concurrency", 1)))


def choose_concurrency(configured: int, generators: Mapping[str, Generator]) -> int:
    """``configured`` if set, else the most any served generator runs at once (1 for llama.cpp or a CPU).

    The largest rather than the sum: a worker serving a batched model next to a one-at-a-time one
    fills the batch, and the other model's asks queue on its own semaphore.
    """
    if configured > 0:
        return configured
    most = max((max_concurrency(g) for g in generators.values()), default=1)
    return max(1, min(AUTO_CONCURRENCY_MAX, most))


class SerialEmbedder:
    """An embedder shared by threads that embeds for one at a time (a fast tokenizer is not thread-safe).

    An ingest embeds a slice per call, so an ask's query waits at most one slice behind it.
    """

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.name = inner.name
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim  # read when needed: a lazy embedder loads its model then

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        with self._lock:
            return self.inner.count_tokens(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.inner.embed(texts)


class Runner:
    """Runs jobs on threads by kind, with at most ``concurrency + SHORT_JOB_THREADS`` in hand; or, serial,
    one job at a time on the caller's thread."""

    def __init__(self, concurrency: int, serial: bool = False):
        self.is_serial = serial
        if serial:
            self._slots = threading.BoundedSemaphore(1)
            self._pools: dict[str, ThreadPoolExecutor] = {}
            return
        self._pools = {"ask": ThreadPoolExecutor(concurrency, thread_name_prefix="ask"),
                       "ingest": ThreadPoolExecutor(1, thread_name_prefix="ingest"),
                       "short": ThreadPoolExecutor(SHORT_JOB_THREADS, thread_name_prefix="short-job")}
        self._slots = threading.BoundedSemaphore(concurrency + SHORT_JOB_THREADS)

    @classmethod
    def for_concurrency(cls, concurrency: int) -> Runner:
        """The serial runner for one ask at a time, else pools for ``concurrency`` asks."""
        return cls(1, serial=True) if concurrency <= 1 else cls(concurrency)

    def wait_for_slot(self, timeout_s: float) -> bool:
        """Reserve a slot for the next job; False if none freed within ``timeout_s``."""
        return self._slots.acquire(timeout=timeout_s)

    def release_slot(self) -> None:
        """Give back a reserved slot that no job took."""
        self._slots.release()

    def submit(self, kind: JobKind, run: Callable[[], None]) -> None:
        """Run a job holding a reserved slot; the slot frees when it ends.

        Serial: it runs here, and its errors (Redis away) reach the caller. Else on its kind's pool.
        """
        if self.is_serial:
            try:
                run()
            finally:
                self._slots.release()
            return
        pool = self._pools["ask" if kind is JobKind.ASK else "ingest" if kind is JobKind.INGEST else "short"]

        def run_then_free() -> None:
            try:
                run()
            except BaseException:
                log.exception("a %s job ended with an unexpected error", kind)
            finally:
                self._slots.release()

        pool.submit(run_then_free)

    def drain(self) -> None:
        """Wait for every job in hand to end."""
        for name in ("short", "ask", "ingest"):
            if name in self._pools:
                self._pools[name].shutdown(wait=True)

    def serve(self, queue: JobQueue, admit: Callable[[Delivery], JobContext | None],
              start: Callable[[JobContext], Callable[[], None]], on_redis_down: Callable[[Exception, int], None],
              stopping: threading.Event, block_ms: int, burst: bool = False) -> None:
        """The loop: until ``stopping``, take a job whenever a slot is free, ``admit`` it, and run what
        ``start`` returns for it; with ``burst``, end once the streams have nothing new.

        Redis away: ``on_redis_down(exc, failures so far)`` waits, and the loop tries again.
        """
        last_trim = time.monotonic()
        failures = 0
        try:
            while not stopping.is_set():
                if not self.wait_for_slot(block_ms / 1000):
                    continue  # every slot busy; look at the stop flag again
                try:
                    delivery = queue.take(block_ms)
                    context = admit(delivery) if delivery is not None else None
                    if delivery is None and time.monotonic() - last_trim > TRIM_EVERY_S:
                        queue.trim()
                        last_trim = time.monotonic()
                    failures = 0
                except REDIS_DOWN as exc:
                    self.release_slot()
                    on_redis_down(exc, failures)
                    failures += 1
                    continue
                if context is None:
                    self.release_slot()
                    if delivery is None and burst:
                        break
                    continue
                try:
                    self.submit(context.job.kind, start(context))
                except REDIS_DOWN as exc:  # serial only: the job stays pending, taken back once Redis answers
                    on_redis_down(exc, failures)
                    failures += 1
        finally:
            self.drain()  # after a stop: the jobs in hand finish, or the grace timer hands them back
