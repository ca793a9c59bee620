"""The worker process: take a job from the stream, run the engine, publish reply events, acknowledge.

One job at a time; the models stay loaded for the life of the process. Delivery (leases, reclaiming,
acknowledging) lives in :mod:`workers.delivery`; this module orchestrates.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from core.embedding import Embedder
from core.fetch import FetchLimits, GuardedFetcher
from core.generation import GenerationParams, Generator
from core.index import EmbedderMismatchError
from core.ingest import IngestInterrupted, IngestLimits, ingest_document
from core.links import index_links, links_in, without_links
from core.pdf import DocumentError
from core.rag import NO_DOCUMENTS_NOTE, RagEngine
from core.registry import ModelRegistry, UnknownModelError
from core.scope import Scope
from jobs import keys
from jobs.interactions import AnsweredQuestion, InteractionLog, Source
from jobs.protocol import Job, JobKind, ReplyEvent
from telemetry import metrics
from workers import deadletter
from workers.conversations import ConversationStore
from workers.deadlines import STUCK_EXIT_CODE, STUCK_GRACE_S, Watchdog, seconds_left
from workers.delivery import Delivery, JobQueue, Lease
from workers.heartbeat import HeartbeatThread, WorkerInfo, live_models, live_workers
from workers.ingest_progress import RedisProgressStore
from workers.memory import ConversationMemory
from workers.replies import ReplyPublisher
from workers.store import DEFAULT_CACHE_MAX_BYTES, RedisDocumentStore

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000
MAX_JOBS_BETWEEN_SLICES = 8  # bounds how long an ingest pauses to serve others
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


class Worker:
    def __init__(self, client: redis.Redis, embedder: Embedder, generators: dict[str, Generator],
                 registry: ModelRegistry, config: WorkerConfig, top_k: int = 5, min_relevance: float = 0.0):
        self.redis = client
        self.embedder = embedder
        self.generators = generators
        self.registry = registry
        self.config = config
        self.worker_id = config.worker_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.store = RedisDocumentStore(client, config.index_cache_max_bytes)
        self.conversations = ConversationStore(client)
        self.memory = ConversationMemory(client, config.memory_turns, config.memory_ttl_s)
        self.interactions = InteractionLog(client, log_text=config.log_text,
                                           retention_days=config.interaction_retention_days,
                                           max_entries=config.interaction_max_entries)
        self.engine = RagEngine(embedder, self.store, top_k=top_k, min_relevance=min_relevance,
                                history_tokens=config.memory_tokens)
        # Forwarded asks have waited once already, so a worker reads its models' streams first.
        streams = [keys.model_stream(name) for name in sorted(generators)] + [keys.JOBS_STREAM]
        self.queue = JobQueue(client, self.worker_id, config.reclaim_idle_s, streams)
        self._stopping = threading.Event()
        self._cancel = threading.Event()  # the current job's: set on timeout, lost lease, or shutdown
        self._is_handing_back = False
        self._held: Delivery | None = None  # the delivery of the job in hand
        self._enqueued_at_s = time.time()  # the current job's submit time, from its stream entry id
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
        # SIGTERM: finish the job in hand within the grace time, else hand it back; then exit.
        signal.signal(signal.SIGTERM, lambda *_: self._shut_down())
        signal.signal(signal.SIGINT, lambda *_: self._shut_down())

    def _shut_down(self) -> None:
        if self._stopping.is_set():
            self._hand_back_current()  # a second signal: do not wait for the grace time
            return
        self.stop()
        timer = threading.Timer(self.config.shutdown_grace_s, self._hand_back_current)
        timer.daemon = True
        timer.start()

    def _hand_back_current(self) -> None:
        self._is_handing_back = True
        self._cancel.set()
        # A generator deaf to ``cancel`` would keep the process alive: the lease lapses once it exits.
        timer = threading.Timer(STUCK_GRACE_S, lambda: os._exit(STUCK_EXIT_CODE))
        timer.daemon = True
        timer.start()

    def run(self, burst: bool = False) -> None:
        """Serve jobs until stopped; with ``burst``, exit once the stream has nothing new."""
        self._with_redis(self.ensure_group)
        info = WorkerInfo(self.worker_id, socket.gethostname(), os.getpid(), sorted(self.generators),
                          time.time())
        heartbeat = HeartbeatThread(self.redis, info, self.config.heartbeat_ttl_s)
        heartbeat.start()
        log.info("worker %s ready; serving %s", self.worker_id, ", ".join(sorted(self.generators)))
        block_ms = max(10, min(READ_BLOCK_MS, int(self.config.reclaim_idle_s * 1000 / 2)))
        last_trim = time.monotonic()
        failures = 0
        try:
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
                    wait_s = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                    failures += 1
                    log.warning("Redis is unreachable (%s); retrying in %.1f s", exc, wait_s)
                    self.queue.drain_own = True  # what we held is still ours: take it back first
                    self._stopping.wait(wait_s)
                    continue
                if delivery is None and burst:
                    break
        finally:
            heartbeat.stop()

    def _with_redis(self, call: Callable[[], None]) -> None:
        for attempt in range(len(RECONNECT_BACKOFF_S) * 10):
            try:
                call()
                return
            except REDIS_DOWN as exc:
                wait_s = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                log.warning("Redis is unreachable (%s); retrying in %.1f s", exc, wait_s)
                time.sleep(wait_s)
        call()

    def _process(self, delivery: Delivery) -> None:
        try:
            job = delivery.job()
        except (KeyError, ValueError, TypeError) as exc:
            log.error("dropping unreadable job entry %s: %s", delivery.entry_id, exc)
            self.queue.finish(delivery, user=None, reply_to=None)
            return
        log.info("job %s entry %s delivery %d started at=%.3f", job.id, delivery.entry_id,
                 delivery.times_delivered, time.time())
        if delivery.times_delivered > self.config.max_deliveries:
            event = deadletter.failure_event(job, delivery.times_delivered)
            record = deadletter.dead_record(delivery.fields[b"job"].decode(), delivery.entry_id,
                                            delivery.times_delivered, "max deliveries")
            self.queue.finish(delivery, job.sender_key, job.reply_to, event.to_json(), record)
            metrics.dead_lettered(job.kind)
            log.error("job %s dead-lettered after %d deliveries", job.id, delivery.times_delivered - 1)
            return
        started = time.monotonic()
        self._enqueued_at_s = _entry_time_s(delivery.entry_id)
        cancel = self._cancel = threading.Event()
        publisher = ReplyPublisher(self.redis, job, attempt=delivery.times_delivered,
                                   finish=lambda event: self._finish(delivery, job, event),
                                   post=lambda event: self._post(delivery, job, event, cancel),
                                   entry_id=delivery.entry_id)
        if job.deadline_at is not None and time.time() > job.deadline_at:
            publisher.error("This request waited past its deadline before a worker was free, so it was "
                            "dropped rather than answered late. Please ask again.", outcome="expired")
            return
        if self._forward_if_served_elsewhere(delivery, job):
            return
        self._held = delivery
        with Lease(self.queue, delivery, on_lost=self._cancel.set) as lease:
            self.handle(job, publisher)
        if self._is_handing_back and not lease.is_lost:
            self.queue.hand_back(delivery)
            log.info("job %s handed back to the queue", job.id)
            return
        self.jobs_done += 1
        log.info("job %s (%s) done in %.2f s", job.id, job.kind, time.monotonic() - started)

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

    def _finish(self, delivery: Delivery, job: Job, event: ReplyEvent) -> bool:
        if self._is_handing_back:
            return False  # the job goes back to the queue instead; hand_back follows
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
        question = without_links(job.text) if notes else job.text
        if notes and not question:  # only links: the reply says what was indexed
            publisher.final("\n".join(notes))
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
        started_at_s = time.time()
        first_token_at_s: list[float] = []

        def on_delta(text: str) -> None:
            if not first_token_at_s:
                first_token_at_s.append(time.time())
            publisher.delta(text)

        with Watchdog(self._cancel, limit_s) as watchdog:
            answer = self.engine.answer(question, job.scope, generator, params, on_delta=on_delta,
                                        history=self.memory.turns(job.scope.key), cancel=self._cancel)
        if watchdog.fired:
            publisher.error(f"The answer took too long and was stopped after {max(0.0, limit_s):.0f} s. "
                            "Try a shorter question, or a faster model (/models).", outcome="timeout")
            return
        text = "\n".join([*notes, "", answer.text]) if notes else answer.text
        if publisher.final(text, answer.citations):  # remembered once, by the worker that posted it
            self.memory.remember(job.scope.key, question, answer.text.removeprefix(NO_DOCUMENTS_NOTE))
            self.interactions.record_answer(AnsweredQuestion(
                job_id=job.id, scope_key=job.scope.key, model=model, grounded=answer.grounded,
                sources=tuple(Source(hit.chunk.file_name, hit.chunk.pages, hit.score) for hit in answer.sources),
                queue_wait_s=max(0.0, started_at_s - self._enqueued_at_s),
                first_token_s=first_token_at_s[0] - started_at_s if first_token_at_s else None,
                answer_s=time.time() - started_at_s, question=job.text, answer=answer.text))

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
        cancel, held = self._cancel, self._held
        saved = RedisProgressStore(self.redis, self.queue.fence(held), file_name) if held is not None else None
        try:
            result = ingest_document(data, file_name, job.scope.key,  # type: ignore[arg-type]
                                     self.embedder, self.store, self.config.ingest_limits, user=job.user,
                                     progress=publisher.progress,
                                     between_slices=self._serve_waiting_jobs, saved=saved,
                                     should_stop=lambda: cancel.is_set() or self._stopping.is_set())
        except IngestInterrupted as stopped:
            if self._stopping.is_set():
                # Shutting down: the slices done so far are saved; the next worker goes on from there.
                self._is_handing_back = True
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
            outer_cancel, outer_held = self._cancel, self._held
            try:
                self._process(delivery)
            finally:
                self._cancel, self._held = outer_cancel, outer_held

    def _docs(self, job: Job, publisher: ReplyPublisher) -> None:
        documents = self.store.list_documents(job.scope.search_keys())
        if not documents:
            publisher.final("No documents are shared in this conversation yet.")
            return
        lines = [f"Documents a question here searches ({len(documents)}):"]
        for doc in documents:
            where = "this thread" if doc.scope_key == job.scope.key and job.scope.thread else "this channel"
            lines.append(f"- {doc.file_name} ({doc.pages} {doc.unit}s, {doc.chunks} passages; {where})")
        publisher.final("\n".join(lines))

    def _forget(self, job: Job, publisher: ReplyPublisher) -> None:
        target = job.text.strip()
        documents = self.store.list_documents([job.scope.key])
        chosen = documents if target in ("", "all", "*") else [d for d in documents if d.file_name == target]
        if not chosen:
            names = ", ".join(d.file_name for d in documents) or "none"
            publisher.error(f"No document called '{target}' here. Documents: {names}.")
            return
        for doc in chosen:
            self.store.forget(doc.scope_key, doc.doc_id)
        publisher.final("Forgot " + ", ".join(d.file_name for d in chosen) + ".")

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

    def _status(self, job: Job, publisher: ReplyPublisher) -> None:
        workers = live_workers(self.redis)
        depth = int(self.redis.get(keys.QUEUE_DEPTH_KEY) or 0)
        dead = self.redis.xlen(keys.DEAD_STREAM)
        lines = [f"{len(workers)} worker(s) live; {depth} job(s) queued or running; {dead} dead-lettered."]
        lines += [f"- {w.worker_id} on {w.host}: {', '.join(w.models)}" for w in workers]
        cache = self.store.cache
        lines.append(f"This worker ({self.worker_id}) holds {len(cache)} scope index(es) in "
                     f"{cache.nbytes:,} of {cache.max_bytes:,} bytes.")
        publisher.final("\n".join(lines))


def _entry_time_s(entry_id: str) -> float:
    """A stream entry id starts with the milliseconds at which Redis added it: the job's submit time."""
    try:
        return int(entry_id.split("-", 1)[0]) / 1000
    except ValueError:
        return time.time()
