"""The two ways a Slack reply is shown: the native stream, and post-and-edit (also the stream's fallback).

:class:`ChatSurface` posts a message and edits it as the text grows (``chat.postMessage`` /
``chat.update``), split at Slack's length limit; edits are paid from the workspace's
:class:`~bot.budget.EditBudget` (Tier 3). Slash commands without a channel to post in answer
through their ``response_url``.

:class:`StreamSurface` uses Slack's streaming methods for an answer in a thread (a channel thread or
the assistant pane): ``chat.startStream`` with the first text, one ``chat.appendStream`` per piece of
new text (Tier 4, paid from the workspace's append budget), and ``chat.stopStream`` with the sources
and the 👍/👎 ``feedback_buttons``. Where the workspace refuses a stream (an error response: GovSlack,
an old plan), it says so once per workspace (:class:`StreamSupport`) and that workspace's answers are
posted and edited instead. When the final text is not the streamed text plus more (another worker
started the job over, an error, a marked sentence, or longer than one message), the stream is stopped
and its message edited to the final text like any other.

Both keep the messages they posted in Redis (:class:`~bot.messages.PostedStore`), the stream's state
with them, so a restarted adapter finishes what the previous one started. Every call waits for, or
skips while, a 429's Retry-After for that method in that workspace (:class:`~bot.ratelimits.RateGate`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.budget import EditBudget
from bot.messages import PostedMessages, PostedStore
from bot.ratelimits import RateGate, current_workspace
from bot.reply import SurfaceLimits, Update
from bot.slack.feedback import SECTION_TEXT_LIMIT, answer_blocks, rating_block, text_blocks
from bot.slack.limits import SLACK_TEXT_LIMIT, UPDATE_INTERVAL_S
from bot.tasks import finish_anyway
from core.scope import Scope
from telemetry import metrics

log = logging.getLogger(__name__)

UNLIMITED_EDITS_PER_MIN = 6000.0  # a reply without a shared budget (one-off use, tests)
NOT_ALLOWED_HERE = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")
MESSAGE_GONE = ("message_not_found", "cant_update_message", "edit_window_closed")
RATE_LIMITED = "ratelimited"

VIA_CHAT = "chat"  # post and edit messages in the channel (or DM), in a thread when thread_ts is set
VIA_RESPONSE_URL = "response_url"  # slash commands: answer through the command's response_url

T = TypeVar("T")


@dataclass(frozen=True)
class SlackRoute:
    """The part of a job's route its surfaces need (bot.slack.replies.Route adds what the reply shows)."""

    via: str
    channel: str
    scope: str  # the job's scope key, to find permalinks of cited files
    thread_ts: str = ""  # "" posts at the top level of the channel or DM
    response_url: str = ""  # slash commands; also the fallback where the bot may not post
    response_type: str = "ephemeral"  # response_url only: ephemeral | in_channel
    user: str = ""  # who asked: a stream in a channel is addressed to them
    assistant: str = ""  # "1": the thread is an assistant pane thread (status goes to its status line)


async def gated(gate: RateGate, scope: str, method: str, make: Callable[[], Awaitable[T]]) -> T:
    """One Web API call that waits out a 429 on ``method`` in ``scope`` (a workspace; a channel for
    chat.postMessage, whose limit is per channel) and, meeting one, holds every other caller there."""
    async with gate.hold(scope, method):
        token = current_workspace.set(scope)  # the SDK's 429 handler closes the gate for this scope
        try:
            return await make()
        finally:
            current_workspace.reset(token)


class StreamSupport:
    """Whether answers may stream natively, and the workspaces that refused it (then they post and edit)."""

    def __init__(self, is_enabled: bool = True):
        self.is_enabled = is_enabled
        self.refused: set[str] = set()

    def may_stream(self, route: Any) -> bool:
        workspace = Scope.parse(route.scope).workspace if route.scope else ""
        return (self.is_enabled and route.via == VIA_CHAT and bool(route.thread_ts) and route.kind == "ask"
                and workspace not in self.refused)

    def refuse(self, workspace: str, error: str) -> None:
        if workspace not in self.refused:
            log.warning("workspace %s refuses native streaming (%s); its answers are posted and edited",
                        workspace, error)
        self.refused.add(workspace)


class ChatSurface:
    """Post once, edit as the text grows, split at Slack's limit; or answer through a response_url."""

    def __init__(self, route: SlackRoute, client: AsyncWebClient, http: aiohttp.ClientSession, budget: EditBudget,
                 gate: RateGate, store: PostedStore | None, *, limit: int = SLACK_TEXT_LIMIT,
                 update_interval_s: float = UPDATE_INTERVAL_S):
        self.route = route
        self.client = client
        self.http = http
        self.budget = budget
        self.gate = gate
        self.workspace = Scope.parse(route.scope).workspace if route.scope else ""
        self.limits = SurfaceLimits(limit, update_interval_s)
        self.messages: PostedMessages[str] = PostedMessages(self, store=store)  # by ts
        self._is_final = False
        self._answer_id = f"{route.channel}:{route.thread_ts}:{id(self)}"
        self.budget.join(self._answer_id)

    def interval_s(self) -> float:
        return max(self.limits.edit_interval_s, self.budget.interval_s())

    def close(self) -> None:
        self.budget.leave(self._answer_id)

    async def start_afresh(self) -> None:
        log.info("showing the answer failed twice; posting it anew in the thread")
        await self.messages.start_afresh()

    async def show(self, update: Update) -> bool:
        pieces = update.pieces(self.limits.text_chars)
        if self.route.via == VIA_CHAT:
            shown = await self._show(pieces, update)
            if shown is not None:
                return shown
        if update.is_final:
            await self._respond(pieces, update.rate_job)
        return True

    async def _show(self, pieces: list[str], update: Update) -> bool | None:
        """Intermediate updates: False when skipped (no edit budget free, or Slack refused); final ones
        raise instead. None when the bot may not post here and the reply switched to the response_url."""
        await self.messages.load()
        edits = self.messages.edits_needed(pieces)
        if not update.is_final:
            if not all(self.gate.is_open(self.workspace, m) for m in ("chat.update", "chat.delete")):
                return False
            if not all(self.budget.try_spend() for _ in range(edits)):
                return False
        self._is_final = update.is_final
        try:
            await self.messages.sync(pieces, update.rate_job if update.is_final else "")
            return True
        except SlackApiError as exc:
            error = exc.response.get("error")
            metrics.platform_error("slack", exc)
            # e.g. not_in_channel after /phobos in a channel the bot was never invited to.
            if self.route.response_url and not self.messages.posted and error in NOT_ALLOWED_HERE:
                log.info("cannot post in %s (%s); answering through response_url", self.route.channel, error)
                self.route = dataclasses.replace(self.route, via=VIA_RESPONSE_URL)
                return None
            if update.is_final:
                raise
            log.info("skipped an update in %s: %s", self.route.channel, error)
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            if update.is_final:
                raise
            log.info("skipped an update in %s: %s", self.route.channel, exc)
            return False

    # ---- MessageSurface: Slack messages by ts; final edits wait for the workspace's budget

    def ref_key(self, ref: str) -> str:
        return ref

    def ref_of(self, key: str) -> str:
        return key

    async def post(self, text: str, index: int, rate_job: str = "") -> str:
        return await self._post(text, answer_blocks(text, rate_job) if rate_job else None)

    async def _post(self, text: str, blocks: list[dict[str, Any]] | None) -> str:
        resp = await self.call("chat.postMessage", lambda: self.client.chat_postMessage(
            channel=self.route.channel, text=text, blocks=blocks, thread_ts=self.route.thread_ts or None,
            unfurl_links=False, unfurl_media=False), scope=self.route.channel)
        return str(resp["ts"])

    async def edit(self, ref: str, text: str, rate_job: str = "") -> str:
        if self._is_final:
            await self.budget.spend()
        blocks = answer_blocks(text, rate_job) if rate_job else None
        try:
            await self.call("chat.update", lambda: self.client.chat_update(
                channel=self.route.channel, ts=ref, text=text, blocks=blocks))
        except SlackApiError as exc:
            if exc.response.get("error") not in MESSAGE_GONE:
                raise
            # Someone deleted our message: post a new one in its place, at the end of the thread.
            return await self._post(text, blocks)
        return ref

    async def delete(self, ref: str) -> None:
        if self._is_final:
            await self.budget.spend()
        await self.call("chat.delete", lambda: self.client.chat_delete(channel=self.route.channel, ts=ref))

    async def call(self, method: str, make: Callable[[], Awaitable[T]], scope: str = "") -> T:
        """Make one Web API call under the rate gate of ``method`` in this workspace (or ``scope``)."""
        return await gated(self.gate, scope or self.workspace, method, make)

    async def _respond(self, pieces: list[str], rate_job: str) -> None:
        if not self.route.response_url:  # a job retried from the dead letters: its posting rights are gone
            log.warning("no response_url for a reply in %s; the answer is not posted", self.route.channel)
            return
        for index, piece in enumerate(pieces):
            payload: dict[str, Any] = {"text": piece, "response_type": self.route.response_type,
                                       "replace_original": False}
            if rate_job and index == len(pieces) - 1:
                payload["blocks"] = answer_blocks(piece, rate_job)
            async with self.http.post(self.route.response_url, json=payload) as resp:
                if resp.status >= 500:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                if resp.status != 200:
                    # used_url / expired_url: Slack will not take it through this URL, ever.
                    log.warning("response_url answered %s; the answer could not be shown", resp.status)
                    return


class StreamSurface:
    """An answer streamed with chat.startStream / appendStream / stopStream; post-and-edit where refused."""

    def __init__(self, chat: ChatSurface, append_budget: EditBudget, support: StreamSupport):
        self.chat = chat
        self.route = chat.route
        self.budget = append_budget
        self.support = support
        self.limits = SurfaceLimits(chat.limits.text_chars, chat.limits.edit_interval_s, streams_natively=True)
        self._is_fallen_back = False
        self._answer_id = f"{chat.route.channel}:{chat.route.thread_ts}:{id(self)}"
        self.budget.join(self._answer_id)

    @property
    def stream(self) -> dict[str, Any]:
        """``{"ts": ..., "streamed": text so far, "stopped": bool}`` once started; kept with the messages."""
        return self.chat.messages.extra.setdefault("stream", {})

    def interval_s(self) -> float:
        return max(self.limits.edit_interval_s, self.budget.interval_s())

    def close(self) -> None:
        self.budget.leave(self._answer_id)
        self.chat.close()

    async def start_afresh(self) -> None:
        self._is_fallen_back = True
        await self.chat.start_afresh()

    async def show(self, update: Update) -> bool:
        await self.chat.messages.load()
        # Posted and edited already (a queue's status, also by an adapter before a restart), or nothing
        # streamed before the end (one message says it all): post-and-edit.
        posted_plainly = bool(self.chat.messages.posted) and not self.stream
        if self._is_fallen_back or posted_plainly or (not self.stream and update.is_final):
            return await self.chat.show(update)
        if not update.is_streaming and not update.is_final:
            return await self._status(update)
        text = "\n\n".join(part for part in (update.header, update.body) if part)
        if not update.is_final:
            return await self._append(text, update)
        return await self._stop(text, update)

    async def _status(self, update: Update) -> bool:
        """A status line: in the pane, the thread's status. In a channel thread a stream cannot show one
        (it cannot take text back): a question that waits in a queue is answered by post-and-edit
        instead, so the asker sees its place; one taken up at once shows nothing until text streams."""
        if self.stream:
            return True
        if not self.route.assistant:
            if update.queue_position <= 0:
                return True
            self._is_fallen_back = True
            return await self.chat.show(update)
        try:
            await self.chat.call("assistant.threads.setStatus", lambda: self.chat.client.assistant_threads_setStatus(
                channel_id=self.route.channel, thread_ts=self.route.thread_ts, status=update.body))
            return True
        except SlackApiError as exc:
            log.info("could not set the pane's status: %s", exc.response.get("error"))
            return False

    async def _append(self, text: str, update: Update) -> bool:
        streamed = str(self.stream.get("streamed", ""))
        if self.stream.get("stopped") or not text.startswith(streamed) or len(text) > self.limits.text_chars:
            return False  # text replaced by a new attempt, or past one message: the final update sets it right
        delta = text[len(streamed):]
        if not delta:
            return True
        if self.stream and not self.chat.gate.is_open(self.chat.workspace, "chat.appendStream"):
            return False
        if self.stream and not self.budget.try_spend():
            return False
        try:
            # Shielded, like every call that changes what the stream holds: what reached Slack is recorded
            # even if this adapter is stopped meanwhile, so the next one neither restarts nor repeats it.
            await finish_anyway(self._start(text) if not self.stream else self._append_piece(text, delta))
            return True
        except SlackApiError as exc:
            metrics.platform_error("slack", exc)
            error = str(exc.response.get("error"))
            if not self.stream and error != RATE_LIMITED and exc.response.status_code != 429:
                self.support.refuse(self.chat.workspace, error)
                self._is_fallen_back = True
                return await self.chat.show(update)
            log.info("skipped a stream update in %s: %s", self.route.channel, error)
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("skipped a stream update in %s: %s", self.route.channel, exc)
            return False

    async def _append_piece(self, text: str, delta: str) -> None:
        await self.chat.call("chat.appendStream", lambda: self.chat.client.chat_appendStream(
            channel=self.route.channel, ts=self.stream["ts"], markdown_text=delta))
        self.stream["streamed"] = text
        await self.chat.messages.save()

    async def _start(self, text: str) -> None:
        # A stream outside a DM names its reader.
        is_dm = self.route.channel.startswith("D")
        user = self.route.user if self.route.user and not is_dm else None
        team = self.chat.workspace if user else None
        resp = await self.chat.call("chat.startStream", lambda: self.chat.client.chat_startStream(
            channel=self.route.channel, thread_ts=self.route.thread_ts, markdown_text=text,
            recipient_user_id=user, recipient_team_id=team))
        self.stream.update(ts=str(resp["ts"]), streamed=text, stopped=False)
        self.chat.messages.posted = [(str(resp["ts"]), text)]
        await self.chat.messages.save()

    async def _stop(self, text: str, update: Update) -> bool:
        """Stop the stream with the rest of the answer, its sources and 👍/👎; or stop it and edit the message."""
        ts, streamed = str(self.stream["ts"]), str(self.stream.get("streamed", ""))
        blocks = text_blocks(update.tail) if update.tail else []
        if update.rate_job:
            blocks.append(rating_block(update.rate_job))
        fits = (len(text) <= self.limits.text_chars and len(update.tail) <= SECTION_TEXT_LIMIT
                and len(update.text) <= self.limits.text_chars)
        # The worker's final text is the streamed text, trimmed, or the streamed text and more.
        rest = "" if text.rstrip() == streamed.rstrip() else text[len(streamed):] if text.startswith(streamed) else None
        if not self.stream.get("stopped") and fits and rest is not None:
            await finish_anyway(self._stop_with(ts, rest, blocks, update))
            return True
        if not self.stream.get("stopped"):
            await finish_anyway(self._stop_bare(ts, streamed))
        self._is_fallen_back = True
        return await self.chat.show(update)

    async def _stop_with(self, ts: str, rest: str, blocks: list[dict[str, Any]], update: Update) -> None:
        await self.chat.call("chat.stopStream", lambda: self.chat.client.chat_stopStream(
            channel=self.route.channel, ts=ts, markdown_text=rest or None, blocks=blocks or None))
        self.stream["stopped"] = True
        self.chat.messages.posted = [(ts, update.text)]
        if update.rate_job:
            self.chat.messages.mark_rated(ts)
        await self.chat.messages.save()

    async def _stop_bare(self, ts: str, streamed: str) -> None:
        try:
            await self.chat.call("chat.stopStream", lambda: self.chat.client.chat_stopStream(
                channel=self.route.channel, ts=ts))
        except SlackApiError as exc:  # e.g. the stream had already timed out: editing it still works
            log.info("could not stop the stream in %s: %s", self.route.channel, exc.response.get("error"))
        self.stream["stopped"] = True
        self.chat.messages.posted = [(ts, streamed)]
        await self.chat.messages.save()
