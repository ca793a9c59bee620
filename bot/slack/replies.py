"""Reply events -> Slack messages: post once, edit as the answer streams, end with the sources."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.budget import Budgets, EditBudget
from bot.messages import PostedMessages
from bot.render import format_sources, split_message
from bot.slack.feedback import answer_blocks
from bot.slack.permalinks import PermalinkStore
from bot.streaming import StreamedAnswer
from core.documents import Citation
from core.scope import Scope
from jobs import keys
from jobs.protocol import JobKind, ReplyEvent, ReplyType
from telemetry import metrics

log = logging.getLogger(__name__)

SLACK_TEXT_LIMIT = 3900  # chat.postMessage accepts 4,000 characters of text; leave room for fences
UPDATE_INTERVAL_S = 1.0  # the fastest one answer is edited; the workspace's edit budget may slow it
EDITS_PER_MIN = 45  # chat.update + chat.delete per workspace (Tier 3 allows about 50; leave room)
UNLIMITED_EDITS_PER_MIN = 6000.0  # a reply without a shared budget (one-off use, tests)
FRESH_MESSAGES_FROM_ATTEMPT = 3  # an answer whose edits failed twice is posted as new messages
NOT_ALLOWED_HERE = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")
MESSAGE_GONE = ("message_not_found", "cant_update_message", "edit_window_closed")

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
    kind: str = ""  # the job's kind: an ask's final answer carries 👍/👎 buttons

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
    """One job's visible reply in Slack: the messages it posted and how to bring them up to date.

    Edits are paid from the workspace's :class:`~bot.budget.EditBudget`; an intermediate update that
    finds no budget, or fails, is skipped (the next one shows the text). :meth:`finish` raises until
    the answer is shown; from the third attempt it posts new messages in the thread rather than
    editing ones that keep failing.
    """

    def __init__(self, route: Route, client: AsyncWebClient, http: aiohttp.ClientSession,
                 permalinks: PermalinkStore, budget: EditBudget | None = None, *, limit: int = SLACK_TEXT_LIMIT,
                 update_interval_s: float = UPDATE_INTERVAL_S, job_id: str = ""):
        self.route = route
        self.job_id = job_id  # given: the posted messages are kept in Redis, so a restarted adapter edits them
        self._is_loaded = not job_id
        self.client = client
        self.http = http
        self.permalinks = permalinks
        self.limit = limit
        self.update_interval_s = update_interval_s
        self.budget = budget or EditBudget(UNLIMITED_EDITS_PER_MIN, update_interval_s)
        self.answer = StreamedAnswer(self._render, min_interval_s=self.interval_s)
        self.messages: PostedMessages[str] = PostedMessages(self)  # by ts
        self._is_final_sync = False
        self._rated_job = ""  # set on a final answer: its last message carries 👍/👎 for this job
        self._final_count = 0  # how many messages the final answer has
        self._buttons_shown = False
        self.is_done = False
        self._status_shown_at = float("-inf")
        self._answer_id = f"{route.channel}:{route.thread_ts}:{id(self)}"
        self.budget.join(self._answer_id)

    def interval_s(self) -> float:
        return max(self.update_interval_s, self.budget.interval_s())

    async def feed(self, event: ReplyEvent) -> None:
        if event.is_terminal:
            await self.finish(event, attempt=1)
        elif event.type in (ReplyType.QUEUED, ReplyType.PROGRESS):
            await self._show_status(event)
        else:
            await self.answer.feed(event)

    async def flush(self) -> None:
        await self.answer.flush()

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        """Show the answer with its sources (or the error); raises if Slack did not take it."""
        self.answer.final = event
        if attempt >= FRESH_MESSAGES_FROM_ATTEMPT and self.messages.posted:
            log.info("editing the answer failed %d times; posting it anew in the thread", attempt - 1)
            self.messages.start_afresh()
        await self._render(event.text, is_final=True)
        self.is_done = True
        self.budget.leave(self._answer_id)

    async def give_up(self) -> None:
        self.budget.leave(self._answer_id)
        self.is_done = True
        if self.route.via == VIA_CHAT:
            await self._show([self._with_header(":warning: No worker answered in time. Please ask again later.")],
                             is_final=True)

    async def _show_status(self, event: ReplyEvent) -> None:
        # Once answer text streams, it is the better sign of life; status lines are throttled like it.
        loop_time = asyncio.get_running_loop().time()
        if self.answer.text or loop_time - self._status_shown_at < self.interval_s():
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
        await self._show([self._with_header(line)], is_final=False)

    async def _render(self, text: str, is_final: bool) -> bool:
        final = self.answer.final
        if not is_final or final is None:
            body = escape(text)
        elif final.type is ReplyType.ERROR:
            body = f":warning: {escape(final.text)}"
        else:
            body = escape(final.text) + await self._sources(final.citations)
            if self.route.kind == JobKind.ASK.value:
                self._rated_job = final.job_id
        pieces = split_message(self._with_header(body), self.limit)
        if self.route.via == VIA_CHAT:
            shown = await self._show(pieces, is_final)
            if shown is not None:
                return shown
        if is_final:
            await self._respond(pieces)
        return True

    def _with_header(self, body: str) -> str:
        return f"{self.route.header}\n\n{body}" if self.route.header else body

    async def _sources(self, citations: tuple[Citation, ...]) -> str:
        if not citations:
            return ""
        scope = Scope.parse(self.route.scope)
        links = await self.permalinks.lookup(scope, (c.file_name for c in citations))
        shown = [dataclasses.replace(c, file_name=escape(c.file_name)) for c in citations]
        by_shown = {s: links.get(c.file_name) for s, c in zip(shown, citations, strict=True)}
        return "\n\n" + format_sources(shown, by_shown.get)

    async def _show(self, pieces: list[str], is_final: bool) -> bool | None:
        """Make the posted messages read ``pieces``: edit those that changed, post the rest, delete extras.

        Intermediate updates: False when skipped (no edit budget free, or Slack refused). Final ones
        raise instead. None when the bot may not post here and the reply switched to the command's
        response_url.
        """
        await self._load_posted()
        before = list(self.messages.posted)
        try:
            return await self._sync(pieces, is_final)
        finally:
            if self.messages.posted != before:
                await self._save_posted()

    async def _load_posted(self) -> None:
        if self._is_loaded:
            return
        self._is_loaded = True
        raw = await self.permalinks.redis.get(keys.REPLY_MESSAGES_PREFIX + self.job_id)
        if raw and not self.messages.posted:
            self.messages.posted = [(str(ts), str(text)) for ts, text in json.loads(raw)]

    async def _save_posted(self) -> None:
        if self.job_id:
            await self.permalinks.redis.set(keys.REPLY_MESSAGES_PREFIX + self.job_id,
                                            json.dumps(self.messages.posted), ex=keys.REPLY_MESSAGES_TTL_S)

    async def _sync(self, pieces: list[str], is_final: bool) -> bool | None:
        edits = self.messages.edits_needed(pieces)
        if not is_final and not all(self.budget.try_spend() for _ in range(edits)):
            return False
        self._is_final_sync = is_final
        self._final_count = len(pieces)
        try:
            await self.messages.sync(pieces)
            if is_final and self._rated_job and not self._buttons_shown and self.messages.posted:
                # The last message's text did not change at the end, so no edit carried the buttons.
                ref, text = self.messages.posted[-1]
                await self.edit(ref, text)
            return True
        except SlackApiError as exc:
            error = exc.response.get("error")
            metrics.platform_error("slack", exc)
            # e.g. not_in_channel after /phobos in a channel the bot was never invited to.
            if self.route.response_url and not self.messages.posted and error in NOT_ALLOWED_HERE:
                log.info("cannot post in %s (%s); answering through response_url", self.route.channel, error)
                self.route = Route(**{**self.route.to_meta(), "via": VIA_RESPONSE_URL})
                return None
            if is_final:
                raise
            log.info("skipped an update in %s: %s", self.route.channel, error)
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            if is_final:
                raise
            log.info("skipped an update in %s: %s", self.route.channel, exc)
            return False

    # ---- MessageSurface: Slack messages by ts; final edits wait for the workspace's budget

    async def post(self, text: str, index: int) -> str:
        return await self._post(text, self._blocks(text, is_last=index == self._final_count - 1))

    async def _post(self, text: str, blocks: list[dict[str, Any]] | None) -> str:
        resp = await self.client.chat_postMessage(channel=self.route.channel, text=text, blocks=blocks,
                                                  thread_ts=self.route.thread_ts or None,
                                                  unfurl_links=False, unfurl_media=False)
        self._buttons_shown = self._buttons_shown or blocks is not None
        return str(resp["ts"])

    async def edit(self, ref: str, text: str) -> str:
        if self._is_final_sync:
            await self.budget.spend()
        refs = [posted_ref for posted_ref, _ in self.messages.posted]
        blocks = self._blocks(text, is_last=ref in refs and refs.index(ref) == self._final_count - 1)
        try:
            await self.client.chat_update(channel=self.route.channel, ts=ref, text=text, blocks=blocks)
            self._buttons_shown = self._buttons_shown or blocks is not None
            return ref
        except SlackApiError as exc:
            if exc.response.get("error") not in MESSAGE_GONE:
                raise
            # Someone deleted our message: post a new one in its place, at the end of the thread.
            return await self._post(text, blocks)

    def _blocks(self, text: str, is_last: bool) -> list[dict[str, Any]] | None:
        """The 👍/👎 blocks for the final answer's last message; None (plain text) for any other."""
        if not (self._is_final_sync and self._rated_job and is_last):
            return None
        return answer_blocks(text, self._rated_job)

    async def delete(self, ref: str) -> None:
        if self._is_final_sync:
            await self.budget.spend()
        await self.client.chat_delete(channel=self.route.channel, ts=ref)

    async def _respond(self, pieces: list[str]) -> None:
        if not self.route.response_url:  # a job retried from the dead letters: its posting rights are gone
            log.warning("no response_url for a reply in %s; the answer is not posted", self.route.channel)
            return
        for index, piece in enumerate(pieces):
            payload: dict[str, Any] = {"text": piece, "response_type": self.route.response_type,
                                       "replace_original": False}
            if self._rated_job and index == len(pieces) - 1:
                payload["blocks"] = answer_blocks(piece, self._rated_job)
            async with self.http.post(self.route.response_url, json=payload) as resp:
                if resp.status >= 500:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                if resp.status != 200:
                    # used_url / expired_url: Slack will not take it through this URL, ever.
                    log.warning("response_url answered %s; the answer could not be shown", resp.status)
                    return


def make_reply_factory(client: AsyncWebClient, http: aiohttp.ClientSession, permalinks: PermalinkStore,
                       budgets: Budgets, *, limit: int = SLACK_TEXT_LIMIT,
                       update_interval_s: float = UPDATE_INTERVAL_S) -> Callable[[ReplyEvent], SlackReply | None]:
    """Builds a job's :class:`SlackReply` from the route its events carry (also after a restart)."""

    def make(event: ReplyEvent) -> SlackReply | None:
        route = Route.from_meta(event.meta)
        if route is None:
            return None
        workspace = Scope.parse(route.scope).workspace if route.scope else ""
        return SlackReply(route, client, http, permalinks, budgets.of(workspace), limit=limit,
                          update_interval_s=update_interval_s, job_id=event.job_id)

    return make
