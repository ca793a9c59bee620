"""The worker process: take jobs from the streams, run each kind's handler, publish its replies, acknowledge.

Up to ``concurrency`` asks at a time (see :mod:`workers.runner`, the only loop; with 1, jobs run on the
loop's thread one after another); the models stay loaded for the life of the process. Every job in hand
has its own :class:`JobContext`: lease, cancel, deadline and one finish. Delivery (leases, reclaiming,
acknowledging) lives in :mod:`workers.delivery`, the decisions before a job runs in
:mod:`workers.intake`, one handler per job kind in :mod:`workers.handlers`, and everything a handler
may use in :class:`workers.environment.WorkerEnvironment`. This module runs the process.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import redis

from core.claims import ClaimThresholds
from core.embedding import Embedder
from core.generation import Generator
from core.index import EmbedderMismatchError
from core.ingest import IngestLimits
from core.pdf import DocumentError
from core.registry import ModelRegistry, UnknownModelError
from core.retrieval_settings import RetrievalSettings
from jobs.heartbeats import WorkerInfo
from jobs.interactions import InteractionLog
from jobs.protocol import JobKind
from workers import intake
from workers.deadlines import STUCK_EXIT_CODE, STUCK_GRACE_S
from workers.delivery import Delivery, Lease
from workers.environment import WorkerEnvironment
from workers.handlers import HANDLERS
from workers.heartbeat import HeartbeatThread
from workers.replies import ReplyPublisher
from workers.runner import REDIS_DOWN, JobContext, Runner, max_concurrency
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000
MAX_JOBS_BETWEEN_SLICES = 8  # bounds how long an ingest pauses to serve others
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # waits after consecutive Redis failures; last repeats


class Worker:
    def __init__(self, client: redis.Redis, embedder: Embedder, generators: dict[str, Generator],
                 registry: ModelRegistry, settings: WorkerSettings, *, ingest_limits: IngestLimits | None = None,
                 retrieval: RetrievalSettings | None = None, interactions: InteractionLog | None = None,
                 claim_embedder: Embedder | None = None, claim_thresholds: ClaimThresholds | None = None,
                 second_embedder: Embedder | None = None):
        self.env = WorkerEnvironment.build(client, embedder, generators, registry, settings, ingest_limits,
                                           retrieval=retrieval, interactions=interactions,
                                           claim_embedder=claim_embedder, claim_thresholds=claim_thresholds,
                                           second_embedder=second_embedder)
        self.redis = client
        self.settings = settings
        self.worker_id = self.env.worker_id
        self.concurrency = self.env.concurrency
        self.queue = self.env.queue
        self.is_serial = self.concurrency == 1  # one job at a time, on the loop's thread
        # One ask at a time: an ingest answers waiting jobs between its slices (with more, asks have threads).
        self.env.between_slices = self._serve_waiting_jobs if self.is_serial else None
        self._stopping = self.env.stopping
        self._running: set[JobContext] = set()  # every job in hand, leased, waiting or running
        self._running_lock = threading.Lock()
        self.jobs_done = 0

    # --- lifecycle ---

    def ensure_group(self) -> None:
        self.queue.ensure_group()

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        # SIGTERM: take nothing more, finish the jobs in hand within the grace time, hand back the rest; exit.
        signal.signal(signal.SIGTERM, lambda *_: self._shut_down())
        signal.signal(signal.SIGINT, lambda *_: self._shut_down())

    def _shut_down(self) -> None:
        # A signal handler: it runs on the main thread between two of its bytecodes, maybe while that thread
        # holds _running_lock, so it takes no lock itself (a plain Lock would deadlock); the hand-back, which
        # does, runs on a thread of its own.
        if self._stopping.is_set():
            log.warning("worker %s: a second stop signal; handing back the jobs in hand now", self.worker_id)
            # a second signal: do not wait for the grace time
            threading.Thread(target=self._hand_back_running, name="hand back", daemon=True).start()
            return
        log.info("worker %s stopping: taking no more jobs; %d in hand get %.0f s to finish", self.worker_id,
                 len(self._running), self.settings.shutdown_grace_s)
        self.stop()
        timer = threading.Timer(self.settings.shutdown_grace_s, self._hand_back_running)
        timer.daemon = True
        timer.start()

    def _hand_back_running(self) -> None:
        with self._running_lock:
            running = list(self._running)
        for context in running:
            context.hand_back()
        # A generator deaf to ``cancel`` would keep the process alive: the leases lapse once it exits.
        timer = threading.Timer(STUCK_GRACE_S, lambda: os._exit(STUCK_EXIT_CODE))
        timer.daemon = True
        timer.start()

    def run(self, burst: bool = False) -> None:
        """Serve jobs until stopped; with ``burst``, exit once the streams have nothing new."""
        if not self._with_redis(self.ensure_group):
            log.info("worker %s stopped before Redis answered", self.worker_id)
            return
        generators = self.env.generators
        info = WorkerInfo(self.worker_id, socket.gethostname(), os.getpid(), sorted(generators), time.time())
        heartbeat = HeartbeatThread(self.redis, info, self.settings.heartbeat_ttl_s)
        heartbeat.start()
        log.info("worker %s ready; serving %s", self.worker_id, ", ".join(sorted(generators)))
        how = "set by PHOBOS_WORKER_CONCURRENCY" if self.settings.concurrency > 0 else (
            "chosen from the models' max_concurrency: " +
            ", ".join(f"{n} {max_concurrency(g)}" for n, g in sorted(generators.items())))
        log.info("worker %s holds up to %d ask(s) at once (%s)", self.worker_id, self.concurrency, how)
        block_ms = max(10, min(READ_BLOCK_MS, int(self.settings.reclaim_idle_s * 1000 / 2)))
        try:
            Runner.for_concurrency(self.concurrency).serve(self.queue, self._admit, self._start, self._wait_for_redis,
                                                           self._stopping, block_ms, burst)
        finally:
            heartbeat.stop()
        log.info("worker %s stopped after %d job(s)", self.worker_id, self.jobs_done)

    def _wait_for_redis(self, exc: Exception, failures: int) -> None:
        wait_s = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
        log.warning("Redis is unreachable (%s); retrying in %.1f s", exc, wait_s)
        with self._running_lock:
            # What we held is still ours: take it back first. Not while other jobs run here: taking one
            # of those again would fence off its own run; the lapsed ones are reclaimed as anyone's are.
            self.queue.drain_own = not self._running
        self._stopping.wait(wait_s)

    def _with_redis(self, call: Callable[[], None]) -> bool:
        """Run ``call``, waiting out Redis being away; False when stopped first (a stop never waits on Redis)."""
        for attempt in range(len(RECONNECT_BACKOFF_S) * 10):
            if self._stopping.is_set():
                return False
            try:
                call()
                return True
            except REDIS_DOWN as exc:
                wait_s = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                log.warning("Redis is unreachable (%s); retrying in %.1f s", exc, wait_s)
                self._stopping.wait(wait_s)
        call()
        return True

    # --- one job ---

    def _admit(self, delivery: Delivery) -> JobContext | None:
        return intake.admit(self.env, delivery)

    def _start(self, context: JobContext) -> Callable[[], None]:
        """Start renewing the job's entry, count the job as in hand (a stop hands it back); its run."""
        lease = Lease(self.queue, context.delivery, on_lost=context.cancel.set)
        lease.start()
        with self._running_lock:
            self._running.add(context)
        return functools.partial(self._run_job, context, lease)

    def _process(self, delivery: Delivery) -> None:
        """Run one job on this thread, from its delivery to its finish (or hand-back)."""
        context = self._admit(delivery)
        if context is not None:
            self._start(context)()

    def _run_job(self, context: JobContext, lease: Lease) -> None:
        """Run an admitted job under its lease."""
        job, started = context.job, time.monotonic()
        if not self.is_serial:
            log.info("job %s (%s) running; %d job(s) in hand here", job.id, job.kind, len(self._running))
        try:
            if not context.is_handing_back:
                self.handle(context, self.env.publisher(context))
        except REDIS_DOWN as exc:
            if self.is_serial:
                raise  # the loop reconnects and takes it back
            # The entry stays pending: once its lease lapses it is reclaimed, here or elsewhere.
            log.warning("job %s stopped: Redis is unreachable (%s)", job.id, exc)
            return
        finally:
            lease.release()
            with self._running_lock:
                self._running.discard(context)
        if context.is_handing_back and not lease.is_lost:
            self.queue.hand_back(context.delivery)
            log.info("job %s handed back to the queue", job.id)
            return
        with self._running_lock:
            self.jobs_done += 1
        log.info("job %s (%s) done in %.2f s", job.id, job.kind, time.monotonic() - started)

    def handle(self, context: JobContext, publisher: ReplyPublisher) -> None:
        """Run one job's handler; every outcome, failures included, ends in a final or error event."""
        job = context.job
        try:
            HANDLERS[job.kind](self.env, context, publisher)
        except (DocumentError, UnknownModelError, EmbedderMismatchError) as exc:
            publisher.error(str(exc))
        except REDIS_DOWN:
            raise  # the job stays pending; the loop reconnects and takes it back
        except Exception:
            log.exception("job %s failed", job.id)
            publisher.error(f"Something went wrong while working on this ({job.kind}). The worker log has "
                            f"the details under job id {job.id}; please try again.", outcome="failed")

    def _serve_waiting_jobs(self) -> None:
        """Between the slices of an ingest: run the jobs that arrived meanwhile, so a 3,000-page file does
        not hold up questions for minutes. Another ingest is handed back, to be taken by a free worker
        (or by this one once the current ingest is done): ingests are never nested."""
        for _ in range(MAX_JOBS_BETWEEN_SLICES):
            if self._stopping.is_set():
                return
            delivery = self.queue.take_new_nowait()
            if delivery is None:
                return
            try:
                is_ingest = delivery.job().kind is JobKind.INGEST
            except (KeyError, ValueError, TypeError):
                is_ingest = False  # unreadable: intake drops it with a log line
            if is_ingest:
                self.queue.hand_back(delivery)
                return
            self._process(delivery)
