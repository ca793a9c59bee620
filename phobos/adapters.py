"""Running the chat adapters: settings -> adapter settings, and which adapters are configured."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobs.client import JobClient
from phobos import runtime
from phobos.settings import Settings
from telemetry import metrics


def _ids(csv: str) -> frozenset[int]:
    return frozenset(int(part) for part in csv.replace(" ", "").split(",") if part)


def configured_adapters(settings: Settings) -> list[str]:
    """The platform adapters whose tokens are set, in the order `phobos up` starts them."""
    found = []
    if settings.discord_token.get_secret_value():
        found.append("discord")
    if settings.slack_bot_token.get_secret_value():
        found.append("slack")
    return found


def run_discord(settings: Settings, redis_url: str) -> None:
    from bot.discord.adapter import adapter_id, serve
    from bot.discord.settings import DiscordSettings

    if not settings.discord_token.get_secret_value():
        raise SystemExit("Set DISCORD_TOKEN first (docs/discord.md).")
    discord_settings = DiscordSettings(
        token=settings.discord_token.get_secret_value(),
        application_id=int(settings.discord_application_id) if settings.discord_application_id else None,
        dev_guild_id=int(settings.discord_dev_guild_id) if settings.discord_dev_guild_id else None,
        allowed_guild_ids=_ids(settings.discord_allowed_guilds),
        allowed_channel_ids=_ids(settings.discord_allowed_channels),
        allowed_role_ids=_ids(settings.discord_allowed_roles),
        allow_dms=settings.discord_allow_dms,
        thread_on_channel_question=settings.discord_thread_on_channel_question,
        max_attachment_mb=settings.discord_max_attachment_mb,
        edit_interval_s=settings.discord_edit_interval_s,
        answer_timeout_s=settings.answer_timeout_s,
        interaction_retention_days=settings.interaction_retention_days,
        interaction_max_entries=settings.interaction_max_entries,
        sync_commands=settings.discord_sync_commands,
        api_url=settings.discord_api_url,
        gateway_url=settings.discord_gateway_url,
    )

    _serve_adapter(lambda jobs: serve(discord_settings, jobs), adapter_id(), settings, redis_url)


def run_slack(settings: Settings, redis_url: str) -> None:
    from bot.slack.adapter import adapter_id, serve
    from bot.slack.settings import SlackSettings

    if not settings.slack_bot_token.get_secret_value():
        raise SystemExit("Set SLACK_BOT_TOKEN first (docs/slack.md).")
    try:
        slack_settings = SlackSettings(
            bot_token=settings.slack_bot_token.get_secret_value(),
            app_token=settings.slack_app_token.get_secret_value(),
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            mode=settings.slack_mode,
            http_host=settings.slack_http_host,
            http_port=settings.slack_http_port,
            http_path=settings.slack_http_path,
            max_file_mb=settings.slack_max_file_mb,
            file_hosts=tuple(h.strip() for h in settings.slack_file_hosts.split(",") if h.strip()),
            update_interval_s=settings.slack_update_interval_s,
            edits_per_min=settings.slack_edits_per_min,
            native_streaming=settings.slack_native_streaming,
            appends_per_min=settings.slack_appends_per_min,
            api_url=settings.slack_api_url,
            dm_search=settings.slack_dm_search,
            membership_ttl_s=settings.slack_membership_ttl_s,
            answer_timeout_s=settings.answer_timeout_s,
            interaction_retention_days=settings.interaction_retention_days,
            interaction_max_entries=settings.interaction_max_entries,
        )
    except ValueError as exc:
        raise SystemExit(f"{exc} (docs/slack.md)") from exc

    _serve_adapter(lambda jobs: serve(slack_settings, jobs), adapter_id(), settings, redis_url)


def _serve_adapter(serve: Callable[[JobClient], Awaitable[None]], adapter_id: str, settings: Settings,
                   redis_url: str) -> None:
    """Run one platform adapter with a job client that applies the queue's admission limits."""

    async def main() -> None:
        client = runtime.connect_async(redis_url, settings)
        try:
            jobs = JobClient(client, adapter_id, limits=runtime.admission_limits(settings),
                             job_deadline_s=settings.job_deadline_s, on_submitted=metrics.job_submitted)
            await serve(jobs)
        finally:
            await client.aclose()

    asyncio.run(main())
