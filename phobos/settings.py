"""Every setting Phobos reads, with its default. Environment variables and a ``.env`` file set them.

Everything else receives a :class:`Settings` object, or the section of it that belongs to that component
(``settings.slack``, ``settings.telemetry``, ...; each declared next to its component, on
:class:`core.env_settings.EnvSection`); nothing else reads the environment. docs/settings.md lists every
variable. Tokens, passwords and REDIS_URL (which may hold one) are ``SecretStr``: reprs and logs show
``**********``, and code that needs the value calls ``get_secret_value()`` where it hands it over.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from bot.discord.settings import DiscordSettings
from bot.settings import AdapterSettings
from bot.slack.settings import SlackSettings
from core.env_settings import EnvSection
from telemetry.settings import TelemetrySettings
from workers.settings import WorkerSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class CliSettings(EnvSection):
    """What the `phobos` commands themselves are told."""

    # How long `phobos ask` waits for the final answer.
    ask_timeout_s: float = Field(600.0, validation_alias=_env("PHOBOS_ASK_TIMEOUT_S"))


class Settings(EnvSection):
    """Every setting; the sections at the end belong to one component each and are handed to it whole."""

    # --- where things live ---
    state_dir: Path = Field(Path(".phobos"), validation_alias=_env("PHOBOS_STATE_DIR"))
    # Redis server URL; empty: start (or reuse) an embedded redis-server with its data in state_dir.
    redis_url: SecretStr = Field(SecretStr(""), validation_alias=_env("REDIS_URL"))
    # A Redis reply slower than this means a dead connection: it is dropped and reopened. Must exceed
    # the longest blocking read (a few seconds).
    redis_socket_timeout_s: float = Field(10.0, validation_alias=_env("PHOBOS_REDIS_SOCKET_TIMEOUT_S"))
    redis_connect_timeout_s: float = Field(5.0, validation_alias=_env("PHOBOS_REDIS_CONNECT_TIMEOUT_S"))
    # TCP keepalive on Redis connections: idle time before the first probe, and between probes (3 probes).
    redis_keepalive_idle_s: int = Field(30, validation_alias=_env("PHOBOS_REDIS_KEEPALIVE_IDLE_S"))
    redis_keepalive_interval_s: int = Field(5, validation_alias=_env("PHOBOS_REDIS_KEEPALIVE_INTERVAL_S"))
    # A pooled Redis connection unused for this long is PINGed before it is used again.
    redis_health_check_interval_s: int = Field(5, validation_alias=_env("PHOBOS_REDIS_HEALTH_CHECK_INTERVAL_S"))

    # --- models ---
    # Embedder: a name in core/embedders.toml (minilm, mpnet, mpnet-hub), or a sentence-transformers
    # folder, hub id or package:MODULE/FOLDER. Changing it means sharing the documents again.
    embedder: str = Field("minilm", validation_alias=_env("PHOBOS_EMBEDDER"))
    # Embed in bfloat16 on CPUs that compute it natively (AVX512-BF16/AMX); ignored elsewhere.
    embed_bf16: bool = Field(True, validation_alias=_env("PHOBOS_EMBED_BF16"))
    # Extra model registry entries (TOML, same shape as core/models.toml).
    models_file: Path | None = Field(None, validation_alias=_env("PHOBOS_MODELS_FILE"))
    # CPU threads for llama.cpp; 0 means one per core.
    llm_threads: int = Field(0, validation_alias=_env("PHOBOS_LLM_THREADS"))
    # Hugging Face token for gated models (Gemma, Llama 3).
    hf_token: SecretStr = Field(SecretStr(""), validation_alias=_env("HF_TOKEN"))
    # A file holding that token (a mounted Docker or Kubernetes secret); read when HF_TOKEN is empty.
    hf_token_file: str = Field("", validation_alias=_env("HF_TOKEN_FILE"))
    # OpenAI API key and an optional base URL for an OpenAI-compatible server.
    openai_api_key: SecretStr = Field(SecretStr(""), validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str = Field("", validation_alias=_env("OPENAI_BASE_URL"))

    # --- retrieval ---
    top_k: int = Field(5, validation_alias=_env("PHOBOS_TOP_K"))
    # Cosine similarity under which a passage is not shown to the model as a source; empty: the
    # embedder's own floor from core/embedders.toml, calibrated on the dev split by bench/retrieval_quality.py.
    min_relevance: float | None = Field(None, validation_alias=_env("PHOBOS_MIN_RELEVANCE"))
    # Second stage over the first stage's top 40: "" (none), "subpassage" (dense re-scoring of ~100-token
    # sub-passages with the embedder; no extra model, ~1.8 s a question on 2 CPU cores), or a cross-encoder
    # folder or hub id such as cross-encoder/ms-marco-MiniLM-L-6-v2 (for GPU workers; bench/retrieval_quality.py,
    # pipeline +R).
    reranker: str = Field("", validation_alias=_env("PHOBOS_RERANKER"))
    # Largest chunk in embedder tokens (the embedder's own limit caps it).
    chunk_tokens: int = Field(250, validation_alias=_env("PHOBOS_CHUNK_TOKENS"))
    # Tokens repeated between neighbouring chunks, so a sentence cut at a boundary is found whole.
    chunk_overlap_tokens: int = Field(30, validation_alias=_env("PHOBOS_CHUNK_OVERLAP_TOKENS"))
    # Embed and index each chunk with the document title and heading path above it (see
    # bench/retrieval_quality.py, pipeline +S); the stored text stays clean either way.
    section_context: bool = Field(False, validation_alias=_env("PHOBOS_SECTION_CONTEXT"))

    # --- limits ---
    max_upload_mb: float = Field(50.0, validation_alias=_env("PHOBOS_MAX_UPLOAD_MB"))
    max_pages: int = Field(5000, validation_alias=_env("PHOBOS_MAX_PAGES"))
    # Wall time allowed to read one PDF in its disposable child process.
    parse_timeout_s: float = Field(600.0, validation_alias=_env("PHOBOS_PARSE_TIMEOUT_S"))
    # Added to that for each scanned page recognised by OCR (wall time, and CPU time per core): OCR
    # takes seconds a page, so a long scan would otherwise hit the limit sized for text layers.
    parse_ocr_page_s: float = Field(60.0, validation_alias=_env("PHOBOS_PARSE_OCR_PAGE_S"))
    # Address space (RLIMIT_AS) of the child process that reads one file; OCR's models need about 1.4 GB of it.
    parse_memory_mb: int = Field(2048, validation_alias=_env("PHOBOS_PARSE_MEMORY_MB"))
    # Extracted text allowed from one file, all pages together.
    max_text_chars: int = Field(50_000_000, validation_alias=_env("PHOBOS_MAX_TEXT_CHARS"))
    # Recognise scanned PDF pages (no text layer, or a garbage one) by OCR; false: report them unreadable.
    ocr: bool = Field(True, validation_alias=_env("PHOBOS_OCR"))
    # OCR engine: rapidocr (models inside its wheel) or tesseract (where its binary and data are installed).
    ocr_engine: str = Field("rapidocr", validation_alias=_env("PHOBOS_OCR_ENGINE"))
    # Unpacked size allowed for an Office file's ZIP package, all parts together (zip-bomb guard).
    max_unpacked_mb: int = Field(200, validation_alias=_env("PHOBOS_MAX_UNPACKED_MB"))
    # Pages read, chunked and embedded per step of an ingest; bounds memory and the wait between steps.
    ingest_slice_pages: int = Field(32, validation_alias=_env("PHOBOS_INGEST_SLICE_PAGES"))

    # --- the job queue ---
    # A job not finished this long after it was submitted gets an "expired" reply instead of an answer.
    job_deadline_s: float = Field(900.0, validation_alias=_env("PHOBOS_JOB_DEADLINE_S"))
    # Per-user token bucket: questions a user may send at once, and how many it earns back per minute.
    rate_burst: int = Field(5, validation_alias=_env("PHOBOS_RATE_BURST"))
    rate_per_min: float = Field(10.0, validation_alias=_env("PHOBOS_RATE_PER_MIN"))
    # Jobs queued or running, in all and per user, beyond which new ones are refused with a reply.
    max_queue_depth: int = Field(1000, validation_alias=_env("PHOBOS_MAX_QUEUE_DEPTH"))
    max_queued_per_user: int = Field(5, validation_alias=_env("PHOBOS_MAX_QUEUED_PER_USER"))
    # Load the embedder at its first use rather than at start (quick worker restarts in tests).
    lazy_embedder: bool = Field(False, validation_alias=_env("PHOBOS_LAZY_EMBEDDER"))

    # --- sections: each component's settings, declared with it and handed to it whole ---
    # The aliases are names nobody sets: a section is never parsed from one variable (a stray SLACK=... in
    # the environment), only from the variables its own fields declare.
    worker: WorkerSettings = Field(default_factory=WorkerSettings, validation_alias=_env("PHOBOS__WORKER_SECTION"))
    cli: CliSettings = Field(default_factory=CliSettings, validation_alias=_env("PHOBOS__CLI_SECTION"))
    adapters: AdapterSettings = Field(default_factory=AdapterSettings,
                                      validation_alias=_env("PHOBOS__ADAPTERS_SECTION"))
    slack: SlackSettings = Field(default_factory=SlackSettings,
                                 validation_alias=_env("PHOBOS__SLACK_SECTION"))
    discord: DiscordSettings = Field(default_factory=DiscordSettings,
                                     validation_alias=_env("PHOBOS__DISCORD_SECTION"))
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings,
                                         validation_alias=_env("PHOBOS__TELEMETRY_SECTION"))

    @field_validator("min_relevance", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        if not self.hf_token.get_secret_value() and self.hf_token_file:
            self.hf_token = SecretStr(Path(self.hf_token_file).read_text().strip())
        return self

    @cached_property
    def state_path(self) -> Path:
        path = self.state_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
