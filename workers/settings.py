"""The worker's settings: one pydantic-settings section, handed whole to :class:`workers.worker.Worker`.

Every field reads the environment variable (or ``.env`` line) it always read; ``phobos.settings.Settings``
composes this section as ``settings.worker``. Tests build one by field name:
``WorkerSettings(default_model="echo", worker_id="w")``. Settings other components share are not copied
here: the worker is also handed the retrieval section whole (``settings.retrieval``, from which it builds
its engine), the ingest limits ``settings.ingest`` makes, and the interaction log.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.env_settings import EnvSection, env
from core.fetch import FetchLimits
from core.sizes import bytes_from_mb


class WorkerSettings(EnvSection):
    # --- the models it serves ---
    # Model used when a conversation has not chosen one (a name in the registry, or "auto"). The offline
    # default is the most correct model within the README's speed limits on a 2-core CPU (bench/answer_quality.py).
    default_model: str = Field("extractive", validation_alias=env("PHOBOS_DEFAULT_MODEL"))
    # Comma-separated models this worker loads and serves.
    worker_models: str = Field("extractive,smollm2-135m", validation_alias=env("PHOBOS_WORKER_MODELS"))

    # --- the job queue ---
    # This worker's consumer name; empty: host-pid-random. A stable name lets a restarted worker take
    # back the jobs it held first.
    worker_id: str = Field("", validation_alias=env("PHOBOS_WORKER_ID"))
    # A running job whose lease has not been renewed for this long (its worker died) is taken over.
    reclaim_idle_s: float = Field(30.0, validation_alias=env("PHOBOS_RECLAIM_IDLE_S"))
    # Deliveries after which a job that keeps killing workers goes to the dead-letter stream.
    max_deliveries: int = Field(3, validation_alias=env("PHOBOS_MAX_DELIVERIES"))
    # Hard limit on one generation; a generator that ignores the stop request then ends the worker.
    generation_timeout_s: float = Field(300.0, validation_alias=env("PHOBOS_GENERATION_TIMEOUT_S"))
    # On SIGTERM a worker finishes its job if it can within this time, else hands it back to the queue.
    shutdown_grace_s: float = Field(30.0, validation_alias=env("PHOBOS_SHUTDOWN_GRACE_S"))
    # Asks one worker holds at once; 0: chosen from its models (their batch size; 1 for llama.cpp or a CPU).
    concurrency: int = Field(0, ge=0, validation_alias=env("PHOBOS_WORKER_CONCURRENCY"))
    # A worker that misses heartbeats for this long is considered gone.
    heartbeat_ttl_s: int = Field(15, validation_alias=env("PHOBOS_HEARTBEAT_TTL_S"))

    # --- what it keeps ---
    # Memory a worker keeps for scope indexes (vectors, texts, BM25); the least recently asked go first.
    index_cache_max_bytes: int = Field(256 * 1024 * 1024, validation_alias=env("PHOBOS_INDEX_CACHE_MAX_BYTES"))
    # Question-and-answer turns each conversation remembers for its next prompts; 0 turns memory off.
    memory_turns: int = Field(5, validation_alias=env("PHOBOS_MEMORY_TURNS"))
    # Most tokens (the answering model's) of those turns in one prompt; the oldest turns are left out first.
    memory_tokens: int = Field(512, validation_alias=env("PHOBOS_MEMORY_TOKENS"))
    # A conversation quiet for this long forgets its turns.
    memory_ttl_s: int = Field(7 * 24 * 3600, validation_alias=env("PHOBOS_MEMORY_TTL_S"))

    # --- answers ---
    # A final answer's sentences checked against the sources they cite (core/claims/): "mark" puts a
    # warning sign before each unsupported one, "drop" leaves them out, "off" posts the model's text as is.
    claims: Literal["mark", "drop", "off"] = Field("mark", validation_alias=env("PHOBOS_CLAIMS"))

    # --- links in messages ---
    # Index the web page or PDF behind each http(s) link in a question, for that conversation.
    links: bool = Field(True, validation_alias=env("PHOBOS_LINKS"))
    # Links followed per message; more are named in the reply and skipped.
    fetch_max_links: int = Field(3, validation_alias=env("PHOBOS_FETCH_MAX_LINKS"))
    # Largest response body fetched for one link.
    fetch_max_mb: float = Field(20.0, validation_alias=env("PHOBOS_FETCH_MAX_MB"))
    # Wall time for fetching one link, redirects included.
    fetch_timeout_s: float = Field(20.0, validation_alias=env("PHOBOS_FETCH_TIMEOUT_S"))
    # Redirects followed for one link.
    fetch_max_redirects: int = Field(5, validation_alias=env("PHOBOS_FETCH_MAX_REDIRECTS"))
    # Comma-separated networks fetched although not public (tests: 127.0.0.2/32); empty in production.
    fetch_allow_nets: str = Field("", validation_alias=env("PHOBOS_FETCH_ALLOW_NETS"))

    @field_validator("claims", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    def served_models(self) -> list[str]:
        return [name.strip() for name in self.worker_models.split(",") if name.strip()]

    def fetch_limits(self) -> FetchLimits:
        """What fetching one link may cost (a megabyte is 1,000,000 bytes, as everywhere in Phobos)."""
        return FetchLimits(max_bytes=bytes_from_mb(self.fetch_max_mb), timeout_s=self.fetch_timeout_s,
                           max_redirects=self.fetch_max_redirects,
                           allow_nets=FetchLimits.parse_nets(self.fetch_allow_nets))
