"""Every setting Phobos reads, with its default. Environment variables and a ``.env`` file set them.

Everything else receives a :class:`Settings` object; nothing else reads the environment. Tokens,
passwords and REDIS_URL (which may hold one) are ``SecretStr``: reprs and logs show ``**********``, and
code that needs the value calls ``get_secret_value()`` where it hands it over.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers.settings import WorkerSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True)

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
    # How long `phobos ask` and the console wait for a final answer.
    answer_timeout_s: float = Field(600.0, validation_alias=_env("PHOBOS_ANSWER_TIMEOUT_S"))

    # --- Discord (docs/discord.md); the adapter runs when DISCORD_TOKEN is set ---
    discord_token: SecretStr = Field(SecretStr(""), validation_alias=_env("DISCORD_TOKEN"))
    # Application id for the invite URL; empty: learned from Discord at login.
    discord_application_id: str = Field("", validation_alias=_env("PHOBOS_DISCORD_APPLICATION_ID"))
    # Sync slash commands to this guild only (instant, for development); empty: globally.
    discord_dev_guild_id: str = Field("", validation_alias=_env("PHOBOS_DISCORD_DEV_GUILD_ID"))
    # Comma-separated ids; empty allows all. A thread counts as its parent channel.
    discord_allowed_guilds: str = Field("", validation_alias=_env("PHOBOS_DISCORD_ALLOWED_GUILDS"))
    discord_allowed_channels: str = Field("", validation_alias=_env("PHOBOS_DISCORD_ALLOWED_CHANNELS"))
    discord_allowed_roles: str = Field("", validation_alias=_env("PHOBOS_DISCORD_ALLOWED_ROLES"))
    discord_allow_dms: bool = Field(True, validation_alias=_env("PHOBOS_DISCORD_ALLOW_DMS"))
    # A question asked at channel level opens a thread from the message for the answer.
    discord_thread_on_channel_question: bool = Field(
        True, validation_alias=_env("PHOBOS_DISCORD_THREAD_ON_CHANNEL_QUESTION"))
    discord_max_attachment_mb: float = Field(25.0, validation_alias=_env("PHOBOS_DISCORD_MAX_ATTACHMENT_MB"))
    # At most one edit per message per this many seconds while an answer streams.
    discord_edit_interval_s: float = Field(1.0, validation_alias=_env("PHOBOS_DISCORD_EDIT_INTERVAL_S"))
    discord_sync_commands: bool = Field(True, validation_alias=_env("PHOBOS_DISCORD_SYNC_COMMANDS"))
    # Discord's REST API base (a proxy, or a local fake); empty: discord.py's default.
    discord_api_url: str = Field("", validation_alias=_env("PHOBOS_DISCORD_API_URL"))
    # Discord's gateway websocket URL; empty: the one discord.py asks Discord for.
    discord_gateway_url: str = Field("", validation_alias=_env("PHOBOS_DISCORD_GATEWAY_URL"))

    # --- Slack (docs/slack.md); the adapter runs when SLACK_BOT_TOKEN is set ---
    slack_bot_token: SecretStr = Field(SecretStr(""), validation_alias=_env("SLACK_BOT_TOKEN"))
    # App-level token (xapp-..., scope connections:write): Socket Mode only.
    slack_app_token: SecretStr = Field(SecretStr(""), validation_alias=_env("SLACK_APP_TOKEN"))
    # HTTP mode only: verifies that requests come from Slack.
    slack_signing_secret: SecretStr = Field(SecretStr(""), validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_mode: str = Field("socket", validation_alias=_env("PHOBOS_SLACK_MODE"))  # socket | http
    slack_http_host: str = Field("0.0.0.0", validation_alias=_env("PHOBOS_SLACK_HTTP_HOST"))
    slack_http_port: int = Field(3000, validation_alias=_env("PHOBOS_SLACK_HTTP_PORT"))
    slack_http_path: str = Field("/slack/events", validation_alias=_env("PHOBOS_SLACK_HTTP_PATH"))
    slack_max_file_mb: float = Field(50.0, validation_alias=_env("PHOBOS_SLACK_MAX_FILE_MB"))
    # Comma-separated: the only hosts that receive the bot token when a shared file is downloaded.
    slack_file_hosts: str = Field("files.slack.com", validation_alias=_env("PHOBOS_SLACK_FILE_HOSTS"))
    # At most one chat.update per answer per this many seconds while it streams.
    slack_update_interval_s: float = Field(1.0, validation_alias=_env("PHOBOS_SLACK_UPDATE_INTERVAL_S"))
    # chat.update/chat.delete calls per minute per workspace, shared by all streaming answers (Tier 3: ~50).
    slack_edits_per_min: float = Field(45.0, validation_alias=_env("PHOBOS_SLACK_EDITS_PER_MIN"))
    # Stream answers with chat.startStream/appendStream/stopStream (false: post and edit every answer).
    slack_native_streaming: bool = Field(True, validation_alias=_env("PHOBOS_SLACK_NATIVE_STREAMING"))
    # chat.appendStream calls per minute per workspace, shared by all streaming answers (Tier 4: 100+).
    slack_appends_per_min: float = Field(90.0, validation_alias=_env("PHOBOS_SLACK_APPENDS_PER_MIN"))
    # Slack Web API base URL (GovSlack: https://slack-gov.com/api/, or a proxy).
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_env("PHOBOS_SLACK_API_URL"))
    # A DM question searches the documents of every channel of the workspace the asker is a member of now.
    slack_dm_search: bool = Field(True, validation_alias=_env("PHOBOS_SLACK_DM_SEARCH"))
    # How long a user's channel memberships are cached; membership events (joins, leaves, archives) drop them.
    slack_membership_ttl_s: float = Field(60.0, validation_alias=_env("PHOBOS_SLACK_MEMBERSHIP_TTL_S"))

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

    # --- the worker (workers/settings.py: its models, queue, memory, claims, links) ---
    # Its own section, handed whole to the worker; its variables keep their names (PHOBOS_WORKER_ID, ...).
    # Its alias is one nobody sets; a stray variable named WORKER (the field's name, which populate_by_name
    # also reads) is not decoded as JSON (NoDecode) and is ignored (_sections_read_their_own_variables).
    worker: Annotated[WorkerSettings, NoDecode] = Field(default_factory=WorkerSettings,
                                                        validation_alias=AliasChoices("PHOBOS__WORKER_SECTION"))

    @field_validator("worker", mode="before")
    @classmethod
    def _sections_read_their_own_variables(cls, value: object) -> object:
        return WorkerSettings() if isinstance(value, str) else value

    # --- logging and metrics ---
    # Empty: INFO for long-running commands (up, worker), WARNING for one-shot ones (ingest, search, ...).
    log_level: str = Field("", validation_alias=_env("PHOBOS_LOG_LEVEL"))
    # "text" (human lines) or "json" (one JSON object per line, for log collectors).
    log_format: str = Field("text", validation_alias=_env("PHOBOS_LOG_FORMAT"))
    # Port for /metrics, /healthz and /readyz on long-running processes; 0 binds nothing. `phobos up`
    # gives its worker and adapters the next ports (up: N, worker: N+1, adapters: N+2, ...).
    metrics_port: int = Field(0, validation_alias=_env("PHOBOS_METRICS_PORT"))
    # Address the metrics port listens on.
    metrics_host: str = Field("0.0.0.0", validation_alias=_env("PHOBOS_METRICS_HOST"))
    # Store question and answer text in logs and in the interaction log; off keeps only ids, scores, timings.
    log_text: bool = Field(False, validation_alias=_env("PHOBOS_LOG_TEXT"))

    # --- the interaction log (answers and their 👍/👎; `phobos feedback`) ---
    # Entries older than this are trimmed.
    interaction_retention_days: float = Field(90.0, validation_alias=_env("PHOBOS_INTERACTION_RETENTION_DAYS"))
    # The log never holds more entries than this (answers and ratings together).
    interaction_max_entries: int = Field(100_000, validation_alias=_env("PHOBOS_INTERACTION_MAX_ENTRIES"))

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

