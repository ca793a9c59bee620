"""The Slack Web API client the adapter and its replies share: 429s are waited out and counted.

The SDK's own retry handlers wait Retry-After (and retry dropped connections); the counting handler
also closes the :class:`RateGate` for that method in the caller's workspace, so no other call goes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.ratelimits import RateGate, current_workspace
from bot.slack.settings import SlackSettings
from telemetry import metrics

RATE_LIMIT_RETRIES = 2  # the SDK waits Retry-After and tries again this often before the call fails


class CountedRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """The SDK's own 429 handler (it waits Retry-After), counting each 429 for /metrics on the way and
    closing the :class:`RateGate` for that method in the caller's workspace, so no other call goes first."""

    def __init__(self, gate: RateGate | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.gate = gate

    async def prepare_for_next_attempt_async(self, *, state: Any, request: Any, response: Any = None,
                                             error: Exception | None = None) -> None:
        metrics.platform_rate_limited("slack")
        if self.gate is not None and response is not None:
            method = str(request.url).rstrip("/").rsplit("/", 1)[-1]
            self.gate.close_for(current_workspace.get(), method, _retry_after_s(response.headers))
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response, error=error)


def _retry_after_s(headers: Mapping[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError, IndexError):
                break
    return 1.0


def web_client(settings: SlackSettings, gate: RateGate | None = None) -> AsyncWebClient:
    """The Web API client: the SDK's own retries wait out 429s (Retry-After) and connection errors."""
    return AsyncWebClient(token=settings.bot_token.get_secret_value(), base_url=settings.api_url, retry_handlers=[
        AsyncConnectionErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        CountedRateLimitRetryHandler(gate, max_retry_count=RATE_LIMIT_RETRIES)])
