"""What every chat adapter is told (console, Slack, Discord): when to give up on a reply, the interaction log's bounds.

The Slack and Discord sections extend this one, so each platform adapter is handed one object whole.
"""

from __future__ import annotations

import logging
import warnings

from pydantic import Field, model_validator

from core.env_settings import EnvSection, env

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 600.0
_warned_about: set[str] = set()


def warn_once(variable: str, replacement: str) -> None:
    """Say once per process that ``variable`` is deprecated in favour of ``replacement``."""
    if variable in _warned_about:
        return
    _warned_about.add(variable)
    message = f"{variable} is deprecated and will be removed in the next release; set {replacement} instead."
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    log.warning(message)


class AdapterSettings(EnvSection):
    """Settings every chat adapter reads."""

    # A job whose worker has sent nothing for this long gets the reply's give-up line instead of an answer.
    reply_timeout_s: float = Field(REPLY_TIMEOUT_S, validation_alias=env("PHOBOS_REPLY_TIMEOUT_S"))
    # Deprecated name of reply_timeout_s (it also meant `phobos ask`'s wait, now PHOBOS_ASK_TIMEOUT_S).
    deprecated_answer_timeout_s: float | None = Field(None, validation_alias=env("PHOBOS_ANSWER_TIMEOUT_S"),
                                                      exclude=True, repr=False)
    # The interaction log (answers and their ratings; `phobos feedback`): entries older than this are trimmed.
    interaction_retention_days: float = Field(90.0, validation_alias=env("PHOBOS_INTERACTION_RETENTION_DAYS"))
    # The log never holds more entries than this (answers and ratings together).
    interaction_max_entries: int = Field(100_000, validation_alias=env("PHOBOS_INTERACTION_MAX_ENTRIES"))

    @model_validator(mode="after")
    def _deprecated_answer_timeout(self) -> AdapterSettings:
        if self.deprecated_answer_timeout_s is not None:
            warn_once("PHOBOS_ANSWER_TIMEOUT_S", "PHOBOS_REPLY_TIMEOUT_S")
            if "reply_timeout_s" not in self.model_fields_set:
                self.reply_timeout_s = self.deprecated_answer_timeout_s
        return self
