"""The worker process: take a job from the stream, run the engine, publish reply events, acknowledge.

One job at a time; the models stay loaded for the life of the process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from core.embedding import Embedder
from core.generation import GenerationParams, Generator
from core.ingest import IngestLimits, ingest_pdf
from core.pdf import DocumentError
from core.rag import RagEngine
from core.registry import ModelRegistry, UnknownModelError
from core.scope import Scope
from workers import keys
from workers.conversations import ConversationStore
from workers.heartbeat import HeartbeatThread, WorkerInfo, live_models, live_workers
from workers.protocol import Job, JobKind
from workers.replies import ReplyPublisher
from workers.store import RedisDocumentStore

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000


@dataclass
class WorkerConfig:
    default_model: str
    ingest_limits: IngestLimits
    heartbeat_ttl_s: int = 15
    worker_id: str = ""


class Worker:
    def __init__(self, client: redis.Redis, embedder: Embedder, generators: dict[str, Generator],
                 registry: ModelRegistry, config: WorkerConfig, top_k: int = 5, min_relevance: float = 0.0):
        self.redis = client
        self.embedder = embedder
        self.generators = generators
        self.registry = registry
        self.config = config
        self.worker_id = config.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = RedisDocumentStore(client)
        self.conversations = ConversationStore(client)
        self.engine = RagEngine(embedder, self.store, top_k=top_k, min_relevance=min_relevance)
        self._stopping = threading.Event()
        self.jobs_done = 0

    # --- lifecycle ---

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(keys.JOBS_STREAM, keys.WORKER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        # SIGTERM finishes the job in hand, then exits.
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

    def run(self, burst: bool = False) -> None:
        """Serve jobs until stopped; with ``burst``, exit once the stream has nothing new."""
        self.ensure_group()
        info = WorkerInfo(self.worker_id, socket.gethostname(), os.getpid(), sorted(self.generators),
                          time.time())
        heartbeat = HeartbeatThread(self.redis, info, self.config.heartbeat_ttl_s)
        heartbeat.start()
        log.info("worker %s ready; serving %s", self.worker_id, ", ".join(sorted(self.generators)))
        try:
            # Entries delivered to this consumer name before a restart come first ("0"), then new ones.
            start_id = "0"
            while not self._stopping.is_set():
                entries = self._read(start_id)
                if not entries:
                    if start_id == "0":
                        start_id = ">"
                        continue
                    if burst:
                        break
                    continue
                for entry_id, fields in entries:
                    self._process(entry_id, fields)
        finally:
            heartbeat.stop()

    def _read(self, start_id: str) -> list[Any]:
        try:
            reply = self.redis.xreadgroup(keys.WORKER_GROUP, self.worker_id, {keys.JOBS_STREAM: start_id},
                                          count=1, block=None if start_id == "0" else READ_BLOCK_MS)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("reading jobs failed (%s); retrying", exc)
            time.sleep(1)
            return []
        if not reply:
            return []
        entries: Any = reply[0][1]  # type: ignore[index]
        return list(entries)

    def _process(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            job = Job.from_json(fields[b"job"])
        except (KeyError, ValueError, TypeError) as exc:
            log.error("dropping unreadable job entry %s: %s", entry_id, exc)
            self.redis.xack(keys.JOBS_STREAM, keys.WORKER_GROUP, entry_id)
            return
        started = time.monotonic()
        self.handle(job)
        self.redis.xack(keys.JOBS_STREAM, keys.WORKER_GROUP, entry_id)
        self.jobs_done += 1
        log.info("job %s (%s) done in %.2f s", job.id, job.kind, time.monotonic() - started)

    # --- jobs ---

    def handle(self, job: Job) -> None:
        """Run one job; every outcome, failures included, ends in a final or error event."""
        publisher = ReplyPublisher(self.redis, job)
        handlers = {
            JobKind.ASK: self._ask,
            JobKind.INGEST: self._ingest,
            JobKind.DOCS: self._docs,
            JobKind.FORGET: self._forget,
            JobKind.SET_MODEL: self._set_model,
            JobKind.MODELS: self._models,
            JobKind.STATUS: self._status,
        }
        try:
            handlers[job.kind](job, publisher)
        except (DocumentError, UnknownModelError) as exc:
            publisher.error(str(exc))
        except Exception:
            log.exception("job %s failed", job.id)
            publisher.error(f"Something went wrong while working on this ({job.kind}). The worker log has "
                            f"the details under job id {job.id}; please try again.")

    def _ask(self, job: Job, publisher: ReplyPublisher) -> None:
        model = job.model or self._conversation_model(job.scope) or self.config.default_model
        spec = self.registry.get(model)
        generator = self.generators.get(model)
        if generator is None:
            live = sorted(live_models(self.redis)) or sorted(self.generators)
            publisher.error(f"No worker serves the model '{model}' right now. Live models: {', '.join(live)}. "
                            "Choose one with /model NAME.")
            return
        params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)
        answer = self.engine.answer(job.text, job.scope, generator, params, on_delta=publisher.delta)
        publisher.final(answer.text, answer.citations)

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
        result = ingest_pdf(data, file_name, job.scope.key, self.embedder, self.store,  # type: ignore[arg-type]
                            self.config.ingest_limits, user=job.user, progress=publisher.progress)
        self.redis.delete(job.blob_key)  # type: ignore[arg-type]
        publisher.final(result.summary())

    def _docs(self, job: Job, publisher: ReplyPublisher) -> None:
        documents = self.store.list_documents(job.scope.search_keys())
        if not documents:
            publisher.final("No documents are shared in this conversation yet.")
            return
        lines = [f"Documents a question here searches ({len(documents)}):"]
        for doc in documents:
            where = "this thread" if doc.scope_key == job.scope.key and job.scope.thread else "this channel"
            lines.append(f"- {doc.file_name} ({doc.pages} pages, {doc.chunks} passages; {where})")
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

    def _status(self, job: Job, publisher: ReplyPublisher) -> None:
        workers = live_workers(self.redis)
        depth = self.redis.xlen(keys.JOBS_STREAM)
        lines = [f"{len(workers)} worker(s) live; {depth} job(s) in the stream."]
        lines += [f"- {w.worker_id} on {w.host}: {', '.join(w.models)}" for w in workers]
        publisher.final("\n".join(lines))
