"""Several jobs in hand at once: how many a worker holds, and which thread runs each.

Asks run on a pool sized by the worker's concurrency; an ingest on a thread of its own (it embeds for
minutes and must not hold up answers); the short jobs (docs, models, status, forget, reset, set model)
on a small pool of their own, so they never wait behind generation. The loop takes a job only while a
slot is free: at most ``concurrency + SHORT_JOB_THREADS`` jobs are in hand, each under its own lease.
A job taken while its pool is busy waits there, still leased, for a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from core.embedding import Embedder
from core.generation import Generator
from jobs.protocol import Job, JobKind
from workers.delivery import Delivery

log = logging.getLogger(__name__)

SHORT_JOB_THREADS = 2
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
    """Runs jobs on threads by kind, with at most ``concurrency + SHORT_JOB_THREADS`` in hand."""

    def __init__(self, concurrency: int):
        self.asks = ThreadPoolExecutor(concurrency, thread_name_prefix="ask")
        self.ingests = ThreadPoolExecutor(1, thread_name_prefix="ingest")
        self.short_jobs = ThreadPoolExecutor(SHORT_JOB_THREADS, thread_name_prefix="short-job")
        self._slots = threading.BoundedSemaphore(concurrency + SHORT_JOB_THREADS)

    def wait_for_slot(self, timeout_s: float) -> bool:
        """Reserve a slot for the next job; False if none freed within ``timeout_s``."""
        return self._slots.acquire(timeout=timeout_s)

    def release_slot(self) -> None:
        """Give back a reserved slot that no job took."""
        self._slots.release()

    def submit(self, kind: JobKind, run: Callable[[], None]) -> None:
        """Run a job holding a reserved slot on its kind's pool; the slot frees when it ends."""
        pool = {JobKind.ASK: self.asks, JobKind.INGEST: self.ingests}.get(kind, self.short_jobs)

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
        for pool in (self.short_jobs, self.asks, self.ingests):
            pool.shutdown(wait=True)
