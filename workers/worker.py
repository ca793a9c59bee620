"""The worker process: take jobs from the stream, run the engine, publish reply events, acknowledge.

Up to ``concurrency`` asks at a time (see :mod:`workers.runner`; with 1, jobs run on the loop's thread
one after another); the models stay loaded for the life of the process. Every job in hand has its own
:class:`JobContext`: lease, cancel, deadline and one finish. Delivery (leases, reclaiming,
acknowledging) lives in :mod:`workers.delivery`; this module orchestrates.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis

from core import claim_marks
from core.embedding import Embedder
from core.fetch import FetchLimits, GuardedFetcher
from core.generation import GenerationParams, Generator
from core.index import EmbedderMismatchError
from core.ingest import IngestInterrupted, IngestLimits, ingest_document
from core.links import index_links, links_in, without_links
from core.pdf import DocumentError
from core.rag import NO_DOCUMENTS_NOTE, Answer, RagEngine
from core.registry import ModelRegistry, UnknownModelError
from core.rerank import make_reranker
from core.scope import Scope
from core.text_safety import EMPTY_QUESTION_HINT, escape_name, normalise_question
from jobs import keys, queue_state, supervised
from jobs.heartbeats import WorkerInfo, live_models, live_workers
from jobs.interactions import AnsweredQuestion, InteractionLog, Source
from jobs.protocol import ClaimSupport, Job, JobKind, ReplyEvent
from telemetry import metrics
from workers import deadletter
from workers.conversations import ConversationStore
from workers.deadlines import STUCK_EXIT_CODE, STUCK_GRACE_S, Watchdog, seconds_left
from workers.delivery import Delivery, JobQueue, Lease
from workers.heartbeat import HeartbeatThread
from workers.ingest_progress import RedisProgressStore
from workers.memory import ConversationMemory
from workers.replies import ReplyPublisher
from workers.runner import JobContext, Runner, SerialEmbedder, choose_concurrency, max_concurrency
from workers.store import DEFAULT_CACHE_MAX_BYTES, RedisDocumentStore

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000
MAX_JOBS_BETWEEN_SLICES = 8  # bounds how long an ingest pauses to serve others
GENERATOR_WAIT_POLL_S = 0.2  # how soon an ask waiting for its model notices its cancel
TRIM_EVERY_S = 30.0
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # waits after consecutive Redis failures; last repeats
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


@dataclass
class WorkerConfig:
    default_model: str
    ingest_limits: IngestLimits
    heartbeat_ttl_s: int = 15
    worker_id: str = ""
    reclaim_idle_s: float = 30.0
    max_deliveries: int = 3
    generation_timeout_s: float = 300.0
    shutdown_grace_s: float = 30.0
    memory_turns: int = 5  # recent turns remembered per conversation; 0 turns memory off
    memory_tokens: int = 512  # at most this many of them (generator tokens) go into a prompt
    memory_ttl_s: int = 7 * 24 * 3600  # a conversation quiet this long forgets its turns
    links: bool = True  # index the pages behind links in a question before answering it
    fetch_limits: FetchLimits = dataclasses.field(default_factory=FetchLimits)
    fetch_max_links: int = 3
    log_text: bool = False  # keep question and answer text in the interaction log
    interaction_retention_days: float = 90.0
    interaction_max_entries: int = 100_000
    index_cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # scope indexes kept in memory
    concurrency: int = 1  # asks held at once; 0: chosen from the generators' max_concurrency
    claims: str = "mark"  # the claim check on final answers: mark, drop or off (core/claim_marks.py)


class Worker:
    def __init__(self, client: redis.Redis, embedder: Embedder, generators: dict[str, Generator],
                 registry: ModelRegistry, config: WorkerConfig, top_k: int = 5, min_relevance: float = 0.0,
                 reranker: str = ""):
        self.redis = client
        self.generators = generators
        self.registry = registry
        self.config = config
        self.concurrency = choose_concurrency(config.concurrency, generators)
        # The embedder's tokenizer is not safe to share between threads: one embedding at a time.
        # (cast: its dim is a read-only property, as LazyEmbedder's is, where the Protocol says attribute)
        self.embedder = cast(Embedder, SerialEmbedder(embedder)) if self.concurrency > 1 else embedder
        # A backend that is not thread-safe says max_concurrency 1: its stream runs one at a time.
        self._generator_slots = {name: threading.BoundedSemaphore(max_concurrency(g))
                                 for name, g in generators.items()}
        self.worker_id = config.worker_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.store = RedisDocumentStore(client, config.index_cache_max_bytes)
        self.conversations = ConversationStore(client)
        self.memory = ConversationMemory(client, config.memory_turns, config.memory_ttl_s)
        self.interactions = InteractionLog(client, log_text=config.log_text,
                                           retention_days=config.interaction_retention_days,
                                           max_entries=config.interaction_max_entries)
        self.engine = RagEngine(self.embedder, self.store, top_k=top_k, min_relevance=min_relevance,
                                history_tokens=config.memory_tokens,
                                reranker=make_reranker(reranker, self.embedder))
        # Forwarded asks have waited once already, so a worker reads its models' streams first.
        streams = [keys.model_stream(name) for name in sorted(generators)] + [keys.JOBS_STREAM]
        self.queue = JobQueue(client, self.worker_id, config.reclaim_idle_s, streams)
        self._stopping = threading.Event()
        self._running: set[JobContext] = set()  # every job in hand, leased, waiting or running
        self._running_lock = threading.Lock()
        self._local = threading.local()  # .context: the job the current thread runs
        self.jobs_done = 0
        # Links are fetched here, not in the adapters: no platform token is needed, the fetch is one more
        # piece of untrusted input next to the files this process already reads in its sandbox, and a
        # slow site holds up one job rather than an adapter's event loop.
        self.fetcher = GuardedFetcher(config.fetch_limits)

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
        if self._stopping.is_set():
            self._hand_back_running()  # a second signal: do not wait for the grace time
            return
        self.stop()
        timer = threading.Timer(self.config.shutdown_grace_s, self._hand_back_running)
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
        """Serve jobs until stopped; with ``burst``, exit once the stream has nothing new."""
        if not self._with_redis(self.ensure_group):
            log.info("worker %s stopped before Redis answered", self.worker_id)
            return
        info = WorkerInfo(self.worker_id, socket.gethostname(), os.getpid(), sorted(self.generators),
                          time.time())
        heartbeat = HeartbeatThread(self.redis, info, self.config.heartbeat_ttl_s)
        heartbeat.start()
        log.info("worker %s ready; serving %s", self.worker_id, ", ".join(sorted(self.generators)))
        how = "set by PHOBOS_WORKER_CONCURRENCY" if self.config.concurrency > 0 else (
            "chosen from the models' max_concurrency: " +
            ", ".join(f"{n} {max_concurrency(g)}" for n, g in sorted(self.generators.items())))
        log.info("worker %s holds up to %d ask(s) at once (%s)", self.worker_id, self.concurrency, how)
        block_ms = max(10, min(READ_BLOCK_MS, int(self.config.reclaim_idle_s * 1000 / 2)))
        try:
            if self.concurrency > 1:
                self._serve_concurrently(block_ms, burst)
            else:
                self._serve_one_at_a_time(block_ms, burst)
        finally:
            heartbeat.stop()

    def _serve_one_at_a_time(self, block_ms: int, burst: bool) -> None:
        last_trim = time.monotonic()
        failures = 0
        while not self._stopping.is_set():
            try:
                delivery = self.queue.take(block_ms)
                if delivery is not None:
                    self._process(delivery)
                elif time.monotonic() - last_trim > TRIM_EVERY_S:
                    self.queue.trim()
                    last_trim = time.monotonic()
                failures = 0
            except REDIS_DOWN as exc:
                self._wait_for_redis(exc, failures)
                failures += 1
                continue
            if delivery is None and burst:
                break

    def _serve_concurrently(self, block_ms: int, burst: bool) -> None:
        """Take a job whenever a slot is free, and run it on its kind's pool (see :mod:`workers.runner`)."""
        runner = Runner(self.concurrency)
        last_trim = time.monotonic()
        failures = 0
        try:
            while not self._stopping.is_set():
                if not runner.wait_for_slot(block_ms / 1000):
                    continue  # every slot busy; look at the stop flag again
                try:
                    delivery = self.queue.take(block_ms)
                    context = self._admit(delivery) if delivery is not None else None
                    if delivery is None and time.monotonic() - last_trim > TRIM_EVERY_S:
                        self.queue.trim()
                        last_trim = time.monotonic()
                    failures = 0
                except REDIS_DOWN as exc:
                    runner.release_slot()
                    self._wait_for_redis(exc, failures)
                    failures += 1
                    continue
                if context is None:
                    runner.release_slot()
                    if delivery is None and burst:
                        break
                    continue
                lease = self._lease(context)
                runner.submit(context.job.kind, functools.partial(self._run_job, context, lease))
        finally:
            runner.drain()  # after a stop: the jobs in hand finish, or the grace timer hands them back

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

    def _process(self, delivery: Delivery) -> None:
        """Run one job on this thread, from its delivery to its finish (or hand-back)."""
        context = self._admit(delivery)
        if context is not None:
            self._run_job(context, self._lease(context))

    def _admit(self, delivery: Delivery) -> JobContext | None:
        """The quick decisions before a job runs: drop, dead-letter, expire or forward it (None), else its context."""
        try:
            job = delivery.job()
        except (KeyError, ValueError, TypeError) as exc:
            log.error("dropping unreadable job entry %s: %s", delivery.entry_id, exc)
            self.queue.finish(delivery, user=None, reply_to=None)
            return None
        log.info("job %s entry %s delivery %d started at=%.3f", job.id, delivery.entry_id,
                 delivery.times_delivered, time.time())
        if delivery.times_delivered > self.config.max_deliveries:
            event = deadletter.failure_event(job, delivery.times_delivered)
            record = deadletter.dead_record(delivery.fields[b"job"].decode(), delivery.entry_id,
                                            delivery.times_delivered, "max deliveries")
            self.queue.finish(delivery, job.sender_key, job.reply_to, event.to_json(), record)
            metrics.dead_lettered(job.kind)
            log.error("job %s dead-lettered after %d deliveries", job.id, delivery.times_delivered - 1)
            return None
        context = JobContext(delivery, job)
        if job.deadline_at is not None and time.time() > job.deadline_at:
            self._publisher(context).error("This request waited past its deadline before a worker was free, "
                                           "so it was dropped rather than answered late. Please ask again.",
                                           outcome="expired")
            return None
        if self._forward_if_served_elsewhere(delivery, job):
            return None
        return context

    def _lease(self, context: JobContext) -> Lease:
        """Start renewing the job's entry, and count the job as in hand (a stop hands it back)."""
        lease = Lease(self.queue, context.delivery, on_lost=context.cancel.set)
        lease.start()
        with self._running_lock:
            self._running.add(context)
        return lease

    def _publisher(self, context: JobContext) -> ReplyPublisher:
        delivery, job = context.delivery, context.job
        return ReplyPublisher(self.redis, job, attempt=delivery.times_delivered,
                              finish=lambda event: self._finish(context, event),
                              post=lambda event: self._post(delivery, job, event, context.cancel),
                              entry_id=delivery.entry_id)

    def _run_job(self, context: JobContext, lease: Lease) -> None:
        """Run an admitted job under its lease; on this thread, ``self._context()`` is this job's."""
        job, started = context.job, time.monotonic()
        outer = getattr(self._local, "context", None)  # an ingest serving waiting jobs between slices
        self._local.context = context
        concurrent = self.concurrency > 1
        if concurrent:
            log.info("job %s (%s) running; %d job(s) in hand here", job.id, job.kind, len(self._running))
        try:
            if not context.is_handing_back:
                self.handle(job, self._publisher(context))
        except REDIS_DOWN as exc:
            if not concurrent:
                raise  # the loop reconnects and takes it back
            # The entry stays pending: once its lease lapses it is reclaimed, here or elsewhere.
            log.warning("job %s stopped: Redis is unreachable (%s)", job.id, exc)
            return
        finally:
            self._local.context = outer
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

    def _context(self) -> JobContext:
        """The job this thread runs."""
        context: JobContext = self._local.context
        return context

    def _forward_if_served_elsewhere(self, delivery: Delivery, job: Job) -> bool:
        """An ask for a model this worker does not serve but a live worker does goes to that model's stream.

        The model is fixed on the forwarded job, so the worker that takes it does not resolve it again
        (its default may differ). Forwarding is not finishing: no reply, the counters stay until then.
        """
        if job.kind is not JobKind.ASK or delivery.stream != keys.JOBS_STREAM:
            return False
        model = self._model_for(job)
        if model in self.generators or model not in live_models(self.redis):
            return False  # served here, or by nobody: _ask answers (with the error naming the live models)
        forwarded = dataclasses.replace(job, model=model)
        if self.queue.forward(delivery, keys.model_stream(model), forwarded.to_json()):
            log.info("job %s forwarded to the workers serving %s", job.id, model)
        else:
            log.warning("job %s was taken over by another worker before it was forwarded", job.id)
        return True

    def _post(self, delivery: Delivery, job: Job, event: ReplyEvent, cancel: threading.Event) -> bool:
        if self.queue.post(delivery, job.reply_to, event.to_json()):
            return True
        log.warning("job %s was taken over by another worker; stopping its work here", job.id)
        cancel.set()
        return False

    def _finish(self, context: JobContext, event: ReplyEvent) -> bool:
        if context.is_handing_back:
            return False  # the job goes back to the queue instead; hand_back follows
        delivery, job = context.delivery, context.job
        is_posted = self.queue.finish(delivery, job.sender_key, job.reply_to, event.to_json())
        if not is_posted:
            log.warning("job %s was taken over by another worker; its result here is discarded", job.id)
        return is_posted

    # --- jobs ---

    def handle(self, job: Job, publisher: ReplyPublisher) -> None:
        """Run one job; every outcome, failures included, ends in a final or error event."""
        handlers = {
            JobKind.ASK: self._ask,
            JobKind.INGEST: self._ingest,
            JobKind.DOCS: self._docs,
            JobKind.FORGET: self._forget,
            JobKind.SET_MODEL: self._set_model,
            JobKind.MODELS: self._models,
            JobKind.STATUS: self._status,
            JobKind.RESET: self._reset,
            JobKind.DM_SEARCH: self._dm_search,
        }
        try:
            handlers[job.kind](job, publisher)
        except (DocumentError, UnknownModelError, EmbedderMismatchError) as exc:
            publisher.error(str(exc))
        except REDIS_DOWN:
            raise  # the job stays pending; the loop reconnects and takes it back
        except Exception:
            log.exception("job %s failed", job.id)
            publisher.error(f"Something went wrong while working on this ({job.kind}). The worker log has "
                            f"the details under job id {job.id}; please try again.", outcome="failed")

    def _model_for(self, job: Job) -> str:
        return job.model or self._conversation_model(job.scope) or self.config.default_model

    def _ask(self, job: Job, publisher: ReplyPublisher) -> None:
        notes = self._index_links(job, publisher)
        # Also here, not only in the adapters: whatever queued the job, the embedder gets valid text.
        question = normalise_question(without_links(job.text) if notes else job.text)
        if notes and not question:  # only links: the reply says what was indexed
            publisher.final("\n".join(notes))
            return
        if not question:
            publisher.error(EMPTY_QUESTION_HINT)
            return
        model = self._model_for(job)
        spec = self.registry.get(model)
        generator = self.generators.get(model)
        if generator is None:
            live = sorted(live_models(self.redis)) or sorted(self.generators)
            publisher.error(f"No worker serves the model '{model}' right now. Live models: {', '.join(live)}. "
                            "Choose one with /model NAME.")
            return
        publisher.observed.model = model
        params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)
        limit_s = seconds_left(job.deadline_at, self.config.generation_timeout_s)
        context = self._context()
        with Watchdog(context.cancel, limit_s) as watchdog:
            if not self._wait_for_generator(model, context.cancel):
                answer = None
            else:
                try:
                    # From a DM, the channels its adapter found the asker can read now, and no others.
                    answer = self.engine.answer(question, job.scope, generator, params, on_delta=publisher.delta,
                                                history=self.memory.turns(job.scope.key), cancel=context.cancel,
                                                reads=job.search_keys())
                finally:
                    self._generator_slots[model].release()
        if watchdog.fired:
            publisher.error(f"The answer took too long and was stopped after {max(0.0, limit_s):.0f} s. "
                            "Try a shorter question, or a faster model (/models).", outcome="timeout")
            return
        if answer is None:
            return  # stopped before its turn on the model: handed back, or taken over elsewhere
        checked = self._check_claims(answer, question, publisher)
        body = checked.text if checked else answer.text
        citations = tuple(dataclasses.replace(c, channel=job.channel_name(c.scope_key))
                          for c in (checked.citations if checked else answer.citations))
        claims = ClaimSupport.of(checked.check, checked.mode, checked.is_fallback) if checked else None
        text = "\n".join([*notes, "", body]) if notes else body
        if publisher.final(text, citations, claims):  # remembered once, by the worker that posted it
            # The next prompt sees the answer without the sentences its sources did not support (after a
            # fallback, only the quoted passages: a model shown the fallback's own words imitates them).
            remembered = claim_marks.remembered(checked) if checked else body
            self.memory.remember(job.scope.key, question, remembered.removeprefix(NO_DOCUMENTS_NOTE))
            timings = publisher.observed  # the same measurements /metrics and the job's log line use
            self.interactions.record_answer(AnsweredQuestion(
                job_id=job.id, scope_key=job.scope.key, model=model, grounded=answer.grounded,
                sources=tuple(Source(hit.chunk.file_name, hit.chunk.pages, hit.score) for hit in answer.sources),
                queue_wait_s=timings.queue_wait_s or 0.0, first_token_s=timings.first_token_s,
                answer_s=timings.elapsed_s(), question=job.text, answer=answer.text,
                support_share=claims.support_share if claims else None,
                unsupported=claims.unsupported if claims else None))

    def _check_claims(self, answer: Answer, question: str,
                      publisher: ReplyPublisher) -> claim_marks.CheckedAnswer | None:
        """The answer after its claim check (None when the check is off or there were no sources);
        the check's time and the answer's support share go to the metrics."""
        started = time.monotonic()
        checked = claim_marks.review(answer, question, self.embedder, self.config.claims)
        if checked is not None:
            publisher.observed.claims_checked(checked.check.support_share, len(checked.check.claims),
                                              len(checked.check.unsupported), time.monotonic() - started)
        return checked

    def _wait_for_generator(self, model: str, cancel: threading.Event) -> bool:
        """Take a turn on ``model`` (its backend runs ``max_concurrency`` streams at once); False if cancelled first."""
        slots = self._generator_slots[model]
        while not slots.acquire(timeout=GENERATOR_WAIT_POLL_S):
            if cancel.is_set():
                return False
        return True

    def _index_links(self, job: Job, publisher: ReplyPublisher) -> list[str]:
        """Index the pages behind the question's links into its conversation; a line per link for the reply."""
        if not self.config.links or not links_in(job.text, 1)[0]:
            return []
        notes = index_links(job.text, job.scope.key, self.fetcher, self.embedder, self.store,
                            self.config.ingest_limits, self.config.fetch_max_links, user=job.user,
                            progress=publisher.progress)
        return notes or ["The linked pages are already indexed here."]

    def _conversation_model(self, scope: Scope) -> str | None:
        """The thread's choice, else its channel's: a thread opened for an answer inherits the channel's model."""
        keys_to_try = [scope.key, scope.channel_scope.key] if scope.thread else [scope.key]
        for key in keys_to_try:
            chosen = self.conversations.model(key)
            if chosen:
                return chosen
        return None

    def _ingest(self, job: Job, publisher: ReplyPublisher) -> None:
        file_name = job.file_name or "document.pdf"
        data = self.redis.get(job.blob_key) if job.blob_key else None
        if data is None:
            publisher.error(f"The contents of {file_name} never reached the worker or expired; "
                            "please share it again.")
            return
        context = self._context()
        cancel = context.cancel
        saved = RedisProgressStore(self.redis, self.queue.fence(context.delivery), file_name)
        # One ask at a time: answer waiting jobs between slices. With more, asks run on their own threads.
        between_slices = self._serve_waiting_jobs if self.concurrency == 1 else None
        try:
            result = ingest_document(data, file_name, job.scope.key,  # type: ignore[arg-type]
                                     self.embedder, self.store, self.config.ingest_limits, user=job.user,
                                     progress=publisher.progress,
                                     between_slices=between_slices, saved=saved,
                                     should_stop=lambda: cancel.is_set() or self._stopping.is_set())
        except IngestInterrupted as stopped:
            if self._stopping.is_set():
                # Shutting down: the slices done so far are saved; the next worker goes on from there.
                context.is_handing_back = True
                log.info("ingest of %s stopped after page %d of %d; handing it back with its progress",
                         file_name, stopped.pages_done, stopped.total)
            else:
                log.warning("ingest of %s stopped after page %d of %d: another worker holds it now",
                            file_name, stopped.pages_done, stopped.total)
            return
        log.info("ingest of %s: %d passages embedded here, %d taken from an earlier run's saved slices",
                 file_name, result.embedded, result.resumed)
        self.redis.delete(job.blob_key)  # type: ignore[arg-type]
        metrics.INGEST_PAGES.inc(0 if result.already_indexed else result.info.pages)
        publisher.final(result.summary())

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
                is_ingest = False  # unreadable: _process drops it with a log line
            if is_ingest:
                self.queue.hand_back(delivery)
                return
            self._process(delivery)

    def _docs(self, job: Job, publisher: ReplyPublisher) -> None:
        documents = self.store.list_documents(job.search_keys())
        if not documents:
            publisher.final("No documents are shared in this conversation yet.")
            return
        lines = [f"Documents a question here searches ({len(documents)}):"]
        for doc in documents:
            channel = job.channel_name(doc.scope_key)
            where = f"#{channel}" if channel else (
                "this thread" if doc.scope_key == job.scope.key and job.scope.thread else "this channel")
            lines.append(f"- {escape_name(doc.file_name)} ({doc.pages} {doc.unit}s, {doc.chunks} passages; {where})")
        publisher.final("\n".join(lines))

    def _forget(self, job: Job, publisher: ReplyPublisher) -> None:
        target = job.text.strip()
        documents = self.store.list_documents([job.scope.key])
        chosen = documents if target in ("", "all", "*") else [
            d for d in documents if target in (d.file_name, escape_name(d.file_name))]
        if not chosen:
            names = ", ".join(escape_name(d.file_name) for d in documents) or "none"
            publisher.error(f"No document called '{escape_name(target)}' here. Documents: {names}.")
            return
        for doc in chosen:
            self.store.forget(doc.scope_key, doc.doc_id)
        publisher.final("Forgot " + ", ".join(escape_name(d.file_name) for d in chosen) + ".")

    def _set_model(self, job: Job, publisher: ReplyPublisher) -> None:
        name = job.text.strip()
        self.registry.get(name)  # raises UnknownModelError with the known names
        self.conversations.set_model(job.scope.key, name)
        live = live_models(self.redis)
        note = "" if name in live else (f" No worker serves it right now; live models: "
                                        f"{', '.join(sorted(live)) or 'none'}.")
        publisher.final(f"This conversation now uses {name}.{note}")

    def _models(self, job: Job, publisher: ReplyPublisher) -> None:
        live = live_models(self.redis)
        current = self._conversation_model(job.scope) or self.config.default_model
        lines = ["Models (* live now, > this conversation's):"]
        for spec in self.registry.specs():
            mark = ("*" if spec.name in live else " ") + (">" if spec.name == current else " ")
            lines.append(f"{mark} {spec.name} [{spec.backend}] {spec.description}")
        publisher.final("\n".join(lines))

    def _reset(self, job: Job, publisher: ReplyPublisher) -> None:
        had_turns = self.memory.clear(job.scope.key)
        publisher.final("Forgot this conversation's earlier questions and answers; its documents and model "
                        "stay." if had_turns else "This conversation had no earlier questions to forget.")

    def _dm_search(self, job: Job, publisher: ReplyPublisher) -> None:
        """Turn DM questions' reading of this server's channels on or off. The adapter lets only members
        allowed to manage the server send this; the adapters read the switch (jobs/keys.py) at each DM."""
        setting = job.text.strip().lower()
        if setting not in ("on", "off"):
            publisher.error("Say `on` or `off`: whether questions asked in a DM may read the documents of "
                            "this server's channels the asker can read.")
            return
        key = keys.dm_search(job.scope.platform, job.scope.workspace)
        if setting == "on":
            self.redis.set(key, "on")
            publisher.final("DM questions now read the documents of every channel of this server the asker "
                            "can see and read the history of, checked at each question. `off` stops it.")
        else:
            self.redis.delete(key)
            publisher.final("DM questions no longer read this server's channels; a DM sees only its own "
                            "documents.")

    def _status(self, job: Job, publisher: ReplyPublisher) -> None:
        workers = live_workers(self.redis)
        state = queue_state.read(self.redis)
        lines = [f"{len(workers)} worker(s) live; {state.depth} job(s) waiting, {state.pending} running; "
                 f"{state.dead} dead-lettered."]
        lines += [f"- {w.worker_id} on {w.host}: {', '.join(w.models)}" for w in workers]
        lines += [f"- {child.describe()}" for child in supervised.current(self.redis) if child.name != "worker"]
        cache = self.store.cache
        lines.append(f"This worker ({self.worker_id}) holds {len(cache)} scope index(es) in "
                     f"{cache.nbytes:,} of {cache.max_bytes:,} bytes.")
        publisher.final("\n".join(lines))

