"""What the Slack adapter is told: tokens, mode, file download limits, how it streams answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.files import DEFAULT_FILE_HOSTS
from bot.slack.surfaces import APPENDS_PER_MIN, EDITS_PER_MIN, SLACK_TEXT_LIMIT, UPDATE_INTERVAL_S

MODES = ("socket", "http")


@dataclass(frozen=True)
class SlackSettings:
    """Everything the Slack adapter is configured with; phobos/settings.py fills it from the environment."""

    bot_token: str = field(repr=False)  # xoxb-...
    app_token: str = field(default="", repr=False)  # xapp-..., Socket Mode only
    signing_secret: str = field(default="", repr=False)  # HTTP mode only: verifies that requests come from Slack
    mode: str = "socket"  # socket | http
    http_host: str = "0.0.0.0"
    http_port: int = 3000
    http_path: str = "/slack/events"
    max_file_mb: float = 50.0
    file_hosts: tuple[str, ...] = DEFAULT_FILE_HOSTS  # the only hosts that ever see the bot token
    file_url_schemes: tuple[str, ...] = ("https",)
    api_url: str = AsyncWebClient.BASE_URL  # GovSlack, a proxy, or a local fake Slack in tests
    update_interval_s: float = UPDATE_INTERVAL_S  # at most one chat.update per answer per this long
    edits_per_min: float = EDITS_PER_MIN  # chat.update + chat.delete per workspace, shared by all answers
    appends_per_min: float = APPENDS_PER_MIN  # chat.appendStream per workspace, shared by all answers
    native_streaming: bool = True  # stream answers with chat.startStream/appendStream/stopStream
    message_limit: int = SLACK_TEXT_LIMIT
    answer_timeout_s: float = 30 * 60  # stop following a job whose worker has been silent this long
    interaction_retention_days: float = 90.0  # the interaction log's bounds, which ratings trim to as well
    interaction_max_entries: int = 100_000
    dm_search: bool = True  # a DM question reads every channel the asker is a member of (bot/slack/membership.py)
    membership_ttl_s: float = 60.0  # how long who-is-in-which-channel is cached; membership events drop it at once

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Slack mode must be one of {MODES}, not {self.mode!r}")
        if self.mode == "socket" and not self.app_token:
            raise ValueError("Socket Mode needs an app-level token (xapp-...)")
        if self.mode == "http" and not self.signing_secret:
            raise ValueError("HTTP mode needs the app's signing secret")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)
