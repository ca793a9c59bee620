"""What logging and the metrics endpoint are told: level, format, whether text is kept, where /metrics listens."""

from __future__ import annotations

from pydantic import Field

from core.env_settings import EnvSection, env


class TelemetrySettings(EnvSection):
    """Logs and metrics of every Phobos process."""

    # Empty: INFO for long-running commands (up, worker), WARNING for one-shot ones (ingest, search, ...).
    log_level: str = Field("", validation_alias=env("PHOBOS_LOG_LEVEL"))
    # "text" (human lines) or "json" (one JSON object per line, for log collectors).
    log_format: str = Field("text", validation_alias=env("PHOBOS_LOG_FORMAT"))
    # Store question and answer text in logs and in the interaction log; off keeps only ids, scores, timings.
    log_text: bool = Field(False, validation_alias=env("PHOBOS_LOG_TEXT"))
    # Port for /metrics, /healthz and /readyz on long-running processes; 0 binds nothing. `phobos up`
    # gives its worker and adapters the next ports (up: N, worker: N+1, adapters: N+2, ...).
    metrics_port: int = Field(0, validation_alias=env("PHOBOS_METRICS_PORT"))
    # Address the metrics port listens on.
    metrics_host: str = Field("0.0.0.0", validation_alias=env("PHOBOS_METRICS_HOST"))
