"""`phobos up`, `console`, `slack` and `discord`: the chat adapters, alone or with a worker under a supervisor."""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid

from bot.console import ConsoleAdapter
from jobs.client import JobClient
from jobs.interactions import AsyncRatings
from phobos import runtime
from phobos.settings import Settings
from telemetry import metrics


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from phobos.supervisor import run_up

    return run_up(settings, with_console=not args.no_console, console=console)


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    with runtime.redis_url(settings) as url:
        serve_adapter_metrics(settings, url)
        asyncio.run(console(url, settings))
    return 0


def cmd_discord(args: argparse.Namespace, settings: Settings) -> int:
    from phobos.adapters import run_discord

    with runtime.redis_url(settings) as url:
        serve_adapter_metrics(settings, url)
        run_discord(settings, url)
    return 0


def cmd_slack(args: argparse.Namespace, settings: Settings) -> int:
    from phobos.adapters import run_slack

    with runtime.redis_url(settings) as url:
        serve_adapter_metrics(settings, url)
        run_slack(settings, url)
    return 0


def serve_adapter_metrics(settings: Settings, url: str) -> None:
    health = runtime.serve_metrics(settings, url)
    if health:
        health.mark_loaded()  # an adapter loads no models: ready whenever Redis answers


async def console(url: str, settings: Settings) -> None:
    """The console adapter on this terminal until /quit or end of input."""
    client = runtime.connect_async(url, settings)
    try:
        await client.ping()  # an unreachable Redis is said at once, not after the first question
        jobs = JobClient(client, adapter_id=f"console-{uuid.uuid4().hex[:8]}",
                         limits=settings.queue.admission_limits(), job_deadline_s=settings.queue.job_deadline_s,
                         on_submitted=metrics.job_submitted)
        adapters = settings.adapters
        ratings = AsyncRatings(client, retention_days=adapters.interaction_retention_days,
                               max_entries=adapters.interaction_max_entries)
        await ConsoleAdapter(jobs, user=os.environ.get("USER", "console-user"),
                             reply_timeout_s=adapters.reply_timeout_s, ratings=ratings,
                             max_upload_bytes=settings.ingest.max_upload_bytes).run()
        await client.delete(jobs.reply_stream)
    finally:
        await client.aclose()
