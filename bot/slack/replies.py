"""Reply events -> Slack messages: post once, edit as the answer streams, end with the sources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.render import format_sources, split_message
from bot.slack.permalinks import PermalinkStore
from bot.streaming import StreamedAnswer
from core.documents import Citation
from core.scope import Scope
from jobs.client import JobClient
from jobs.protocol import ReplyEvent, ReplyType
from telemetry import metrics

log = logging.getLogger(__name__)

SLACK_TEXT_LIMIT = 3900  # chat.postMessage accepts 4,000 characters of text; leave room for fences
UPDATE_INTERVAL_S = 1.0  # chat.update is rate limited (Tier 3); once a second per answer is safe
FINISHED_MEMORY = 2048  # job ids remembered as done, so a late duplicate event is not posted again

VIA_CHAT = "chat"  # post and edit messages in the channel (or DM), in a thread when thread_ts is set
VIA_RESPONSE_URL = "response_url"  # slash commands: answer through the command's response_url


@dataclass(frozen=True)
class Route:
    """Where a job's replies go in Slack. Travels in ``Job.meta`` and comes back on every reply event."""

    via: str
    channel: str
    scope: str  # the job's scope key, to find permalinks of cited files
    thread_ts: str = ""  # "" posts at the top level of the channel or DM
    response_url: str = ""  # slash commands; also the fallback where the bot may not post
    response_type: str = "ephemeral"  # response_url only: ephemeral | in_channel
    header: str = ""  # a line shown above the answer, e.g. the question of a slash command
    file_name: str = ""  # ingest: the file the status message is about

    def to_meta(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Route | None:
        try:
            return cls(**{name: str(meta[name]) for name in cls.__dataclass_fields__ if name in meta})
        except TypeError:  # a reply to a job this adapter did not make
            return None


def escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters; model and file text must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackReply:
    """One job's visible reply: the messages it posted and how to bring them up to date."""

    def __init__(self, route: Route, client: AsyncWebClient, http: aiohttp.ClientSession,
                 permalinks: PermalinkStore, *, limit: int = SLACK_TEXT_LIMIT,
                 update_interval_s: float = UPDATE_INTERVAL_S):
        self.route = route
        self.client = client
        self.http = http
        self.permalinks = permalinks
        self.limit = limit
        self.update_interval_s = update_interval_s
        self.answer = StreamedAnswer(self._render, min_interval_s=update_interval_s)
        self._last_seq = 0
        self.posted: list[tuple[str, str]] = []  # (ts, text) of each message shown, in order
        self._status_shown_at = float("-inf")

    async def feed(self, event: ReplyEvent) -> None:
        if 0 < event.seq <= self._last_seq:
            # The job was redelivered to another worker, which numbers its events from 1 again: start the
            # text over, in the same messages, so the answer is not shown twice.
            self.answer = StreamedAnswer(self._render, min_interval_s=self.update_interval_s)
        self._last_seq = event.seq
        if event.type in (ReplyType.QUEUED, ReplyType.PROGRESS):
            await self._show_status(event)
        else:
            await self.answer.feed(event)

    async def flush(self) -> None:
        await self.answer.flush()

    async def _show_status(self, event: ReplyEvent) -> None:
        # Once answer text streams, it is the better sign of life; status lines are throttled like it.
        loop_time = asyncio.get_running_loop().time()
        if self.answer.text or loop_time - self._status_shown_at < self.update_interval_s:
            return
        if self.route.via != VIA_CHAT:
            return  # a response_url takes five posts at most; keep them for the answer
        self._status_shown_at = loop_time
        subject = f"*{escape(self.route.file_name)}*: " if self.route.file_name else ""
        if event.type is ReplyType.QUEUED:
            ahead = f"queued, {event.position} ahead" if event.position else "working on it…"
            line = subject + ahead
        else:
            count = f" ({event.done}/{event.total})" if event.total else ""
            line = f"{subject}{escape(event.text)}{count}"
        await self._show([self._with_header(line)])

    async def _render(self, text: str, is_final: bool) -> None:
        final = self.answer.final
        if not is_final or final is None:
            body = escape(text)
        elif final.type is ReplyType.ERROR:
            body = f":warning: {escape(final.text)}"
        else:
            body = escape(final.text) + await self._sources(final.citations)
        pieces = split_message(self._with_header(body), self.limit)
        if self.route.via == VIA_CHAT and await self._show(pieces):
            return
        if is_final:
            await self._respond(pieces)

    def _with_header(self, body: str) -> str:
        return f"{self.route.header}\n\n{body}" if self.route.header else body

    async def _sources(self, citations: tuple[Citation, ...]) -> str:
        if not citations:
            return ""
        scope = Scope.parse(self.route.scope)
        links = await self.permalinks.lookup(scope, (c.file_name for c in citations))
        shown = [Citation(escape(c.file_name), c.pages) for c in citations]
        by_shown = {s: links.get(c.file_name) for s, c in zip(shown, citations, strict=True)}
        return "\n\n" + format_sources(shown, by_shown.get)

    async def _show(self, pieces: list[str]) -> bool:
        """Make the posted messages read ``pieces``: edit those that changed, post the rest.

        False when the bot may not post here and the reply switched to the command's response_url.
        """
        try:
            for index, piece in enumerate(pieces):
                if index < len(self.posted):
                    ts, shown = self.posted[index]
                    if shown != piece:
                        await self.client.chat_update(channel=self.route.channel, ts=ts, text=piece)
                        self.posted[index] = (ts, piece)
                else:
                    resp = await self.client.chat_postMessage(
                        channel=self.route.channel, text=piece, thread_ts=self.route.thread_ts or None,
                        unfurl_links=False, unfurl_media=False)
                    self.posted.append((str(resp["ts"]), piece))
            for ts, _ in self.posted[len(pieces):]:
                await self.client.chat_delete(channel=self.route.channel, ts=ts)
            del self.posted[len(pieces):]
            return True
        except SlackApiError as exc:
            metrics.platform_error("slack", exc)
            # e.g. not_in_channel after /phobos in a channel the bot was never invited to.
            if not self.route.response_url or self.posted:
                raise
            log.info("cannot post in %s (%s); answering through response_url", self.route.channel,
                     exc.response.get("error"))
            self.route = Route(**{**self.route.to_meta(), "via": VIA_RESPONSE_URL})
            return False

    async def _respond(self, pieces: list[str]) -> None:
        if not self.route.response_url:  # a job retried from the dead letters: its posting rights are gone
            log.warning("no response_url for a reply in %s; the answer is not posted", self.route.channel)
            return
        for piece in pieces:
            payload = {"text": piece, "response_type": self.route.response_type, "replace_original": False}
            async with self.http.post(self.route.response_url, json=payload) as resp:
                if resp.status != 200:
                    log.warning("response_url answered %s", resp.status)


class ReplyRouter:
    """Reads this adapter's reply stream and drives one :class:`SlackReply` per job, concurrently."""

    def __init__(self, job_client: JobClient, client: AsyncWebClient, http: aiohttp.ClientSession,
                 permalinks: PermalinkStore, *, limit: int = SLACK_TEXT_LIMIT,
                 update_interval_s: float = UPDATE_INTERVAL_S, answer_timeout_s: float = 30 * 60):
        self.job_client = job_client
        self.client = client
        self.http = http
        self.permalinks = permalinks
        self.limit = limit
        self.update_interval_s = update_interval_s
        self.answer_timeout_s = answer_timeout_s  # a job silent this long has lost its worker for good
        self._inboxes: dict[str, asyncio.Queue[ReplyEvent]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()

    async def run(self) -> None:
        """Route reply events until cancelled."""
        try:
            async for event in self.job_client.replies():
                self.dispatch(event)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def dispatch(self, event: ReplyEvent) -> None:
        if event.job_id in self._finished:
            return
        inbox = self._inboxes.get(event.job_id)
        if inbox is None:
            route = Route.from_meta(event.meta)
            if route is None:
                log.warning("reply for job %s has no Slack route; dropped", event.job_id)
                return
            inbox = self._inboxes[event.job_id] = asyncio.Queue()
            task = asyncio.create_task(self._follow(event.job_id, route, inbox))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        inbox.put_nowait(event)

    async def _follow(self, job_id: str, route: Route, inbox: asyncio.Queue[ReplyEvent]) -> None:
        reply = SlackReply(route, self.client, self.http, self.permalinks, limit=self.limit,
                           update_interval_s=self.update_interval_s)
        silent_s = 0.0
        try:
            while silent_s < self.answer_timeout_s:
                try:
                    event = await asyncio.wait_for(inbox.get(), timeout=self.update_interval_s)
                except TimeoutError:
                    # Text that arrived inside the last interval is shown now, not at the next delta.
                    silent_s += self.update_interval_s
                    await reply.flush()
                    continue
                silent_s = 0.0
                await reply.feed(event)
                if event.is_terminal:
                    return
            log.warning("job %s sent nothing for %.0f s; no longer following it", job_id, silent_s)
        except (SlackApiError, aiohttp.ClientError) as exc:
            metrics.platform_error("slack", exc)
            log.warning("could not show the reply to job %s: %s", job_id, exc)
        finally:
            self._inboxes.pop(job_id, None)
            self._finished[job_id] = None
            while len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)

    async def wait_idle(self) -> None:
        """Wait until every job seen so far has been shown to its end (tests, shutdown)."""
        while self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*list(self._tasks))
