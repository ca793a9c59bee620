"""Documents shared on Slack messages become ingest jobs: downloaded here, with the bot token, sent as bytes.

The workers never see the bot token: the adapter fetches the file from Slack's own hosts
(:mod:`bot.slack.files`) and submits its bytes with the job. Each file's job id comes from the message
and the file, so a retried event is the same job and is not downloaded twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline import ReplyRouter
from bot.reply import NOT_A_FORMAT
from bot.slack.files import FileRejected, SharedFile, download, too_large
from bot.slack.payloads import sender_of
from bot.slack.permalinks import PermalinkStore
from bot.slack.replies import VIA_CHAT, Route, escape
from bot.slack.settings import SlackSettings
from core.scope import Scope
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import Job, JobKind
from telemetry import metrics

log = logging.getLogger(__name__)

Post = Callable[[str, str, str], Awaitable[None]]  # (channel, thread_ts, text): a one-off message


class SharedFiles:
    """Turns the files on a message into ingest jobs; made by the adapter once it has started."""

    def __init__(self, settings: SlackSettings, job_client: JobClient, client: AsyncWebClient,
                 permalinks: PermalinkStore, http: aiohttp.ClientSession, router: ReplyRouter, post: Post):
        self.settings = settings
        self.job_client = job_client
        self.client = client
        self.permalinks = permalinks
        self.http = http
        self.router = router
        self.post = post

    async def ingest(self, event: Mapping[str, Any], scope: Scope, status_thread: str,
                     is_addressed: bool = True) -> list[str]:
        """Download each document on the message and submit it for indexing in ``scope``; the submitted job
        ids. Other files (images, archives, ...) get a word naming the formats when someone talks to Phobos."""
        submitted: list[str] = []
        channel, ts = event["channel"], event["ts"]
        for raw in event.get("files") or []:
            shared = await self._details(raw)
            if shared is None or not shared.is_pdf:
                if is_addressed:
                    name = (shared.name if shared else "") or str(raw.get("name") or "That file")
                    await self.post(channel, status_thread, f":warning: *{escape(name)}* {escape(NOT_A_FORMAT)}")
                continue
            job_id = f"slack:{scope.workspace}:{channel}:{ts}:file:{shared.id}"
            # A retried event would download the same file again only to be dropped by submit().
            if await self.job_client.redis.exists(keys.JOB_SEEN_PREFIX + job_id):
                continue
            route = Route(VIA_CHAT, channel, scope.key, thread_ts=status_thread, file_name=shared.name)
            try:
                if shared.size > self.settings.max_file_bytes:
                    raise FileRejected(too_large(self.settings.max_file_bytes))
                blob = await download(self.http, shared.url, self.settings.bot_token.get_secret_value(),
                                      max_bytes=self.settings.max_file_bytes, hosts=self.settings.file_hosts,
                                      schemes=self.settings.file_url_schemes)
            except (FileRejected, aiohttp.ClientError, TimeoutError) as exc:
                reason = str(exc) if isinstance(exc, FileRejected) else "The download from Slack failed."
                text = f":warning: *{escape(shared.name)}*: {escape(reason)}"
                await self.post(channel, status_thread, text)
                continue
            await self.permalinks.remember(scope, shared.name, shared.permalink)
            job = Job(id=job_id, kind=JobKind.INGEST, scope=scope, user=sender_of(event),
                      reply_to=self.job_client.reply_stream, file_name=shared.name,
                      blob_key=keys.BLOB_PREFIX + job_id, meta=route.to_meta())
            self.router.ended(job_id)  # before submitting: the index may be ready quickly
            if (await self.job_client.submit(job, blob=blob)).is_queued:
                submitted.append(job_id)
        return submitted

    async def _details(self, raw: Mapping[str, Any]) -> SharedFile | None:
        """The file as the event describes it, or from files.info when the event gives only its id."""
        if raw.get("url_private") or raw.get("url_private_download"):
            return SharedFile.from_event(raw)
        if not raw.get("id"):
            return None
        try:
            info = await self.client.files_info(file=str(raw["id"]))
        except SlackApiError as exc:
            metrics.platform_error("slack", exc)
            log.warning("files.info %s failed: %s", raw.get("id"), exc.response.get("error"))
            return None
        return SharedFile.from_event(info["file"])
