"""Everything a job handler may use, in one explicit object: the worker's stores, models and settings.

The worker builds one :class:`WorkerEnvironment` at start and hands it to every handler
(:mod:`workers.handlers`) with the job's :class:`~workers.runner.JobContext` and its
:class:`~workers.replies.ReplyPublisher`. A handler reaches nothing else: no module globals, no worker.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from redis import Redis

from core.claims import ClaimThresholds
from core.embedding import Embedder
from core.fetch import GuardedFetcher
from core.generation import Generator
from core.ingest import IngestLimits
from core.ingest_settings import IngestSettings
from core.rag import RagEngine
from core.registry import ModelRegistry
from core.retrieval_settings import RetrievalSettings
from core.scope import Scope
from jobs import keys
from jobs.interactions import InteractionLog
from jobs.protocol import Job
from workers.conversations import ConversationStore
from workers.delivery import JobQueue
from workers.memory import ConversationMemory
from workers.replies import ReplyPublisher
from workers.runner import JobContext, SerialEmbedder, choose_concurrency, max_concurrency
from workers.settings import WorkerSettings
from workers.store import RedisDocumentStore

GENERATOR_WAIT_POLL_S = 0.2  # how soon an ask waiting for its model notices its cancel

# An ingest's limits and retrieval when the builder names none (tests): the sections' defaults, not read from
# the environment (model_construct), so a test's worker behaves the same wherever it runs. No relevance floor.
DEFAULT_INGEST_LIMITS = IngestSettings.model_construct().limits()
DEFAULT_RETRIEVAL = RetrievalSettings.model_construct()


@dataclass
class WorkerEnvironment:
    redis: Redis
    settings: WorkerSettings
    worker_id: str
    concurrency: int  # asks held at once (see workers/runner.py)
    ingest_limits: IngestLimits
    embedder: Embedder  # shared by threads: serialised when more than one job runs at once
    generators: dict[str, Generator]  # the models this worker serves, by name
    generator_slots: dict[str, threading.BoundedSemaphore]  # turns on each model (its max_concurrency)
    registry: ModelRegistry
    store: RedisDocumentStore
    engine: RagEngine
    conversations: ConversationStore
    memory: ConversationMemory
    interactions: InteractionLog
    fetcher: GuardedFetcher  # links are fetched here, not in the adapters (no platform token needed)
    queue: JobQueue
    stopping: threading.Event = field(default_factory=threading.Event)  # set: take nothing more
    # One ask at a time: an ingest runs the jobs that arrived meanwhile between its slices (the worker
    # sets it); with more, asks run on their own threads and this stays None.
    between_slices: Callable[[], None] | None = None
    # The claim check's embedder and thresholds (PHOBOS_CLAIM_EMBEDDER); None: ``embedder`` and the
    # check's defaults.
    claim_embedder: Embedder | None = None
    claim_thresholds: ClaimThresholds | None = None

    @classmethod
    def build(cls, client: Redis, embedder: Embedder, generators: dict[str, Generator],
              registry: ModelRegistry, settings: WorkerSettings, ingest_limits: IngestLimits | None = None,
              retrieval: RetrievalSettings | None = None,
              interactions: InteractionLog | None = None, claim_embedder: Embedder | None = None,
              claim_thresholds: ClaimThresholds | None = None,
              second_embedder: Embedder | None = None) -> WorkerEnvironment:
        concurrency = choose_concurrency(settings.concurrency, generators)
        # The embedder's tokenizer is not safe to share between threads: one embedding at a time.
        # (cast: its dim is a read-only property, as LazyEmbedder's is, where the Protocol says attribute)
        shared = cast(Embedder, SerialEmbedder(embedder)) if concurrency > 1 else embedder
        if claim_embedder is embedder or claim_embedder is None:
            claims = None
        else:
            claims = cast(Embedder, SerialEmbedder(claim_embedder)) if concurrency > 1 else claim_embedder
        # The second stage's embedder (PHOBOS_RERANKER=dense:NAME) is the claim check's model by default:
        # then the same serialised wrapper, so the two never run its tokenizer at once.
        if second_embedder is None or second_embedder is embedder:
            second = None
        elif second_embedder is claim_embedder:
            second = claims
        else:
            second = cast(Embedder, SerialEmbedder(second_embedder)) if concurrency > 1 else second_embedder
        worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        store = RedisDocumentStore(client, settings.index_cache_max_bytes)
        # Forwarded asks have waited once already, so a worker reads its models' streams first.
        streams = [keys.model_stream(name) for name in sorted(generators)] + [keys.JOBS_STREAM]
        return cls(
            redis=client, settings=settings, worker_id=worker_id, concurrency=concurrency,
            ingest_limits=ingest_limits or DEFAULT_INGEST_LIMITS, embedder=shared, generators=generators,
            # A backend that is not thread-safe says max_concurrency 1: its stream runs one at a time.
            generator_slots={name: threading.BoundedSemaphore(max_concurrency(g)) for name, g in generators.items()},
            registry=registry, store=store,
            engine=(retrieval or DEFAULT_RETRIEVAL).engine(shared, store, history_tokens=settings.memory_tokens,
                                                           second_embedder=second),
            conversations=ConversationStore(client),
            memory=ConversationMemory(client, settings.memory_turns, settings.memory_ttl_s),
            interactions=interactions or InteractionLog(client),
            fetcher=GuardedFetcher(settings.fetch_limits()),
            queue=JobQueue(client, worker_id, settings.reclaim_idle_s, streams),
            claim_embedder=claims, claim_thresholds=claim_thresholds)

    def model_for(self, job: Job) -> str:
        """The model that answers ``job``: its own, else its conversation's, else the default."""
        return job.model or self.conversation_model(job.scope) or self.settings.default_model

    def conversation_model(self, scope: Scope) -> str | None:
        """The thread's choice, else its channel's: a thread opened for an answer inherits the channel's model."""
        keys_to_try = [scope.key, scope.channel_scope.key] if scope.thread else [scope.key]
        for key in keys_to_try:
            chosen = self.conversations.model(key)
            if chosen:
                return chosen
        return None

    def wait_for_generator(self, model: str, cancel: threading.Event) -> bool:
        """Take a turn on ``model`` (its backend runs ``max_concurrency`` streams at once); False if cancelled first."""
        slots = self.generator_slots[model]
        while not slots.acquire(timeout=GENERATOR_WAIT_POLL_S):
            if cancel.is_set():
                return False
        return True

    def publisher(self, context: JobContext) -> ReplyPublisher:
        """The job's reply publisher: every event goes through the queue's fenced writes."""
        return ReplyPublisher(self.queue, context.delivery, context.job, on_lost=context.cancel.set,
                              is_handing_back=lambda: context.is_handing_back)
