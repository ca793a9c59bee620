"""What the Slack adapter is told: tokens, mode, file download limits, how it streams answers (docs/slack.md).

The adapter runs when SLACK_BOT_TOKEN is set; ``phobos/settings.py`` composes this section and hands it whole.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from bot.settings import AdapterSettings
from bot.slack.limits import APPENDS_PER_MIN, DEFAULT_FILE_HOSTS, EDITS_PER_MIN, SLACK_TEXT_LIMIT, UPDATE_INTERVAL_S
from core.env_settings import env
from core.sizes import bytes_from_mb

MODES = ("socket", "http")


class SlackSettings(AdapterSettings):
    """Everything the Slack adapter is configured with, from SLACK_* and PHOBOS_SLACK_* variables."""

    bot_token: SecretStr = Field(SecretStr(""), validation_alias=env("SLACK_BOT_TOKEN"))  # xoxb-...
    # App-level token (xapp-..., scope connections:write): Socket Mode only.
    app_token: SecretStr = Field(SecretStr(""), validation_alias=env("SLACK_APP_TOKEN"))
    # HTTP mode only: verifies that requests come from Slack.
    signing_secret: SecretStr = Field(SecretStr(""), validation_alias=env("SLACK_SIGNING_SECRET"))
    mode: str = Field("socket", validation_alias=env("PHOBOS_SLACK_MODE"))  # socket | http
    http_host: str = Field("0.0.0.0", validation_alias=env("PHOBOS_SLACK_HTTP_HOST"))
    http_port: int = Field(3000, validation_alias=env("PHOBOS_SLACK_HTTP_PORT"))
    http_path: str = Field("/slack/events", validation_alias=env("PHOBOS_SLACK_HTTP_PATH"))
    max_file_mb: float = Field(50.0, validation_alias=env("PHOBOS_SLACK_MAX_FILE_MB"))
    # Comma-separated: the only hosts that receive the bot token when a shared file is downloaded.
    file_hosts: Annotated[tuple[str, ...], NoDecode] = Field(DEFAULT_FILE_HOSTS,
                                                             validation_alias=env("PHOBOS_SLACK_FILE_HOSTS"))
    file_url_schemes: tuple[str, ...] = ("https",)  # not an environment variable: tests download over http
    # Slack Web API base URL (GovSlack: https://slack-gov.com/api/, a proxy, or a local fake Slack in tests).
    api_url: str = Field("https://slack.com/api/", validation_alias=env("PHOBOS_SLACK_API_URL"))
    # At most one chat.update per answer per this many seconds while it streams.
    update_interval_s: float = Field(UPDATE_INTERVAL_S, validation_alias=env("PHOBOS_SLACK_UPDATE_INTERVAL_S"))
    # chat.update/chat.delete calls per minute per workspace, shared by all streaming answers (Tier 3: ~50).
    edits_per_min: float = Field(EDITS_PER_MIN, validation_alias=env("PHOBOS_SLACK_EDITS_PER_MIN"))
    # chat.appendStream calls per minute per workspace, shared by all streaming answers (Tier 4: 100+).
    appends_per_min: float = Field(APPENDS_PER_MIN, validation_alias=env("PHOBOS_SLACK_APPENDS_PER_MIN"))
    # Stream answers with chat.startStream/appendStream/stopStream (false: post and edit every answer).
    native_streaming: bool = Field(True, validation_alias=env("PHOBOS_SLACK_NATIVE_STREAMING"))
    message_limit: int = SLACK_TEXT_LIMIT  # not an environment variable
    # A DM question searches the documents of every channel of the workspace the asker is a member of now.
    dm_search: bool = Field(True, validation_alias=env("PHOBOS_SLACK_DM_SEARCH"))
    # How long a user's channel memberships are cached; membership events (joins, leaves, archives) drop them.
    membership_ttl_s: float = Field(60.0, validation_alias=env("PHOBOS_SLACK_MEMBERSHIP_TTL_S"))

    @field_validator("file_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip() for host in value.split(",") if host.strip())
        return value

    def check_usable(self) -> None:
        """Raise ValueError, in one sentence, when the adapter cannot run with these settings."""
        if not self.bot_token.get_secret_value():
            raise ValueError("Set SLACK_BOT_TOKEN first")
        if self.mode not in MODES:
            raise ValueError(f"Slack mode must be one of {MODES}, not {self.mode!r}")
        if self.mode == "socket" and not self.app_token.get_secret_value():
            raise ValueError("Socket Mode needs an app-level token (xapp-...)")
        if self.mode == "http" and not self.signing_secret.get_secret_value():
            raise ValueError("HTTP mode needs the app's signing secret")

    @property
    def max_file_bytes(self) -> int:
        return bytes_from_mb(self.max_file_mb)
