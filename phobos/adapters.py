"""Running the chat adapters, each handed its settings section whole, and which adapters are configured."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobs.client import JobClient
from phobos import runtime
from phobos.settings import Settings
from telemetry import metrics


def configured_adapters(settings: Settings) -> list[str]:
    """The platform adapters whose tokens are set, in the order `phobos up` starts them."""
    found = []
    if settings.discord.token.get_secret_value():
        found.append("discord")
    if settings.slack.bot_token.get_secret_value():
        found.append("slack")
    return found


def run_discord(settings: Settings, redis_url: str) -> None:
    from bot.discord.adapter import adapter_id, serve

    if not settings.discord.token.get_secret_value():
        raise SystemExit("Set DISCORD_TOKEN first (docs/discord.md).")
    _serve_adapter(lambda jobs: serve(settings.discord, jobs), adapter_id(), settings, redis_url)


def run_slack(settings: Settings, redis_url: str) -> None:
    from bot.slack.adapter import adapter_id, serve

    try:
        settings.slack.check_usable()
    except ValueError as exc:
        raise SystemExit(f"{exc} (docs/slack.md).") from exc
    _serve_adapter(lambda jobs: serve(settings.slack, jobs), adapter_id(), settings, redis_url)


def _serve_adapter(serve: Callable[[JobClient], Awaitable[None]], adapter_id: str, settings: Settings,
                   redis_url: str) -> None:
    """Run one platform adapter with a job client that applies the queue's admission limits."""

    async def main() -> None:
        client = runtime.connect_async(redis_url, settings)
        try:
            jobs = JobClient(client, adapter_id, limits=settings.queue.admission_limits(),
                             job_deadline_s=settings.queue.job_deadline_s, on_submitted=metrics.job_submitted)
            await serve(jobs)
        finally:
            await client.aclose()

    asyncio.run(main())
