"""Every setting Phobos reads, with its default. Environment variables and a ``.env`` file set them.

Everything else receives a :class:`Settings` object, or the section of it that belongs to that component
(``settings.models``, ``settings.retrieval``, ``settings.ingest``, ``settings.queue``, ``settings.worker``,
``settings.slack``, ``settings.telemetry``, ...; each declared next to its component, on
:class:`core.env_settings.EnvSection`); nothing else reads the environment. docs/settings.md lists every
variable. Tokens, passwords and REDIS_URL (which may hold one) are ``SecretStr``: reprs and logs show
``**********``, and code that needs the value calls ``get_secret_value()`` where it hands it over.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr

from bot.discord.settings import DiscordSettings
from bot.settings import AdapterSettings
from bot.slack.settings import SlackSettings
from core.env_settings import EnvSection, env
from core.ingest_settings import IngestSettings
from core.model_settings import ModelSettings
from core.retrieval_settings import RetrievalSettings
from jobs.settings import QueueSettings
from telemetry.settings import TelemetrySettings
from workers.settings import WorkerSettings


class CliSettings(EnvSection):
    """What the `phobos` commands themselves are told."""

    # How long `phobos ask` waits for the final answer.
    ask_timeout_s: float = Field(600.0, validation_alias=env("PHOBOS_ASK_TIMEOUT_S"))


class Settings(EnvSection):
    """Every setting; the sections at the end belong to one component each and are handed to it whole."""

    # --- where things live ---
    state_dir: Path = Field(Path(".phobos"), validation_alias=env("PHOBOS_STATE_DIR"))
    # Redis server URL; empty: start (or reuse) an embedded redis-server with its data in state_dir.
    redis_url: SecretStr = Field(SecretStr(""), validation_alias=env("REDIS_URL"))
    # A Redis reply slower than this means a dead connection: it is dropped and reopened. Must exceed
    # the longest blocking read (a few seconds).
    redis_socket_timeout_s: float = Field(10.0, validation_alias=env("PHOBOS_REDIS_SOCKET_TIMEOUT_S"))
    redis_connect_timeout_s: float = Field(5.0, validation_alias=env("PHOBOS_REDIS_CONNECT_TIMEOUT_S"))
    # TCP keepalive on Redis connections: idle time before the first probe, and between probes (3 probes).
    redis_keepalive_idle_s: int = Field(30, validation_alias=env("PHOBOS_REDIS_KEEPALIVE_IDLE_S"))
    redis_keepalive_interval_s: int = Field(5, validation_alias=env("PHOBOS_REDIS_KEEPALIVE_INTERVAL_S"))
    # A pooled Redis connection unused for this long is PINGed before it is used again.
    redis_health_check_interval_s: int = Field(5, validation_alias=env("PHOBOS_REDIS_HEALTH_CHECK_INTERVAL_S"))

    # --- sections: each component's settings, declared with it and handed to it whole ---
    # The aliases are names nobody sets: a section is never parsed from one variable (a stray SLACK=... in
    # the environment), only from the variables its own fields declare.
    models: ModelSettings = Field(default_factory=ModelSettings, validation_alias=env("PHOBOS__MODELS_SECTION"))
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings,
                                         validation_alias=env("PHOBOS__RETRIEVAL_SECTION"))
    ingest: IngestSettings = Field(default_factory=IngestSettings, validation_alias=env("PHOBOS__INGEST_SECTION"))
    queue: QueueSettings = Field(default_factory=QueueSettings, validation_alias=env("PHOBOS__QUEUE_SECTION"))
    worker: WorkerSettings = Field(default_factory=WorkerSettings, validation_alias=env("PHOBOS__WORKER_SECTION"))
    cli: CliSettings = Field(default_factory=CliSettings, validation_alias=env("PHOBOS__CLI_SECTION"))
    adapters: AdapterSettings = Field(default_factory=AdapterSettings,
                                      validation_alias=env("PHOBOS__ADAPTERS_SECTION"))
    slack: SlackSettings = Field(default_factory=SlackSettings,
                                 validation_alias=env("PHOBOS__SLACK_SECTION"))
    discord: DiscordSettings = Field(default_factory=DiscordSettings,
                                     validation_alias=env("PHOBOS__DISCORD_SECTION"))
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings,
                                         validation_alias=env("PHOBOS__TELEMETRY_SECTION"))

    @cached_property
    def state_path(self) -> Path:
        path = self.state_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
