"""Reply events → Discord messages: the surfaces a reply is shown on, and the board of files being indexed.

The reply itself is :class:`bot.reply.AnswerReply`; Discord supplies its markup and two surfaces: channel
messages (:class:`ChannelSurface`) and an interaction's response and follow-ups
(:class:`InteractionSurface`, which moves to the channel once the token expires). Each edits its
messages at most once per ``interval_s``: an intermediate update that is not due is skipped (the next
one shows the text), a final one waits for its turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import discord

from bot import reply
from bot.discord.feedback import rating_view
from bot.discord.settings import MESSAGE_LIMIT
from bot.messages import PostedMessages, PostedStore
from bot.render import split_message
from bot.reply import (
    FILE_QUEUED,
    FRESH_MESSAGES_FROM_ATTEMPT,
    STREAMING_CURSOR,
    AnswerReply,
    Markup,
    SurfaceLimits,
    Update,
    status_line,
)
from jobs.protocol import ReplyEvent, ReplyType
from telemetry import metrics

log = logging.getLogger(__name__)

__all__ = ["MARKUP", "NO_MENTIONS", "STREAMING_CURSOR", "THINKING", "AnswerReply", "ChannelSurface",
           "IngestBoard", "InteractionSurface"]

NO_MENTIONS = discord.AllowedMentions.none()  # answers quote users' text; they must never ping anyone
MARKUP = Markup(warn="⚠️", bold=lambda text: f"**{text}**")
THINKING = f"{MARKUP.wait} {reply.THINKING}"  # the placeholder an answer shows before its first event


# Discord's answers to a webhook token it no longer honours: expired (401 / 50027 Invalid Webhook
# Token), never acknowledged in time (404 / 10062 Unknown interaction), or gone (10015 Unknown Webhook).
DEAD_TOKEN_CODES = frozenset({50027, 10062, 10015})


def token_is_dead(exc: discord.HTTPException) -> bool:
    """True when ``exc`` says the interaction's token is unusable, so only the channel is left."""
    return exc.status in (401, 403, 404) or exc.code in DEAD_TOKEN_CODES


class Paced:
    """At most one update per ``interval_s``: an intermediate one not yet due is skipped, a final one waits."""

    def __init__(self, interval_s: float):
        self.limits = SurfaceLimits(MESSAGE_LIMIT, interval_s)
        self._last_at: float | None = None
        self._lock = asyncio.Lock()

    def interval_s(self) -> float:
        return self.limits.edit_interval_s

    async def turn(self, is_final: bool) -> bool:
        """Wait for (final) or check (intermediate) this reply's turn; True when it may show now."""
        async with self._lock:
            if self._last_at is not None:
                wait_s = self.limits.edit_interval_s - (time.monotonic() - self._last_at)
                if wait_s > 0 and not is_final:
                    return False
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            self._last_at = time.monotonic()
            return True


def _view(rate_job: str) -> dict[str, Any]:
    """``{"view": ...}`` with the 👍/👎 buttons for ``rate_job``, else nothing (a view of None would clear them)."""
    return {"view": rating_view(rate_job)} if rate_job else {}


class ChannelSurface(Paced):
    """Messages in a channel or thread; the first one replies to ``reference`` when there is one.

    With a ``store``, the posted messages' ids are kept in Redis, so a restarted adapter edits them.
    """

    def __init__(self, channel: discord.abc.Messageable | None, reference: discord.Message | None = None,
                 resolve: Any = None, interval_s: float = 1.0, store: PostedStore | None = None):
        super().__init__(interval_s)
        self.channel = channel
        self.reference = reference
        self.resolve = resolve  # finds the channel on first use (a reply to a job from before a restart)
        self.messages: PostedMessages[Any] = PostedMessages(self, store=store)

    async def start_afresh(self) -> None:
        await self.messages.start_afresh()
        self.reference = None

    def close(self) -> None:
        """Nothing shared to leave: discord.py keeps Discord's rate-limit buckets itself."""

    async def show(self, update: Update) -> bool:
        if not await self.turn(update.is_final):
            return False
        await self.show_pieces(update.pieces(self.limits.text_chars), update.rate_job)
        return True

    async def show_pieces(self, pieces: list[str], rate_job: str = "") -> None:
        await self._channel()
        await self.messages.sync(pieces, rate_job)

    async def _channel(self) -> discord.abc.Messageable:
        if self.channel is None:
            assert self.resolve is not None, "a ChannelSurface needs a channel or a way to find it"
            self.channel = await self.resolve()
        return self.channel

    # ---- MessageSurface

    def ref_key(self, ref: Any) -> str:
        return str(ref.id)

    def ref_of(self, key: str) -> Any:
        get_partial = getattr(self.channel, "get_partial_message", None)
        assert get_partial is not None, "messages are looked up in the channel they were posted in"
        return get_partial(int(key))

    async def post(self, text: str, index: int, rate_job: str = "") -> discord.Message:
        channel = await self._channel()
        reference = None
        if index == 0 and self.reference is not None:
            reference = self.reference.to_reference(fail_if_not_exists=False)
        return await channel.send(text, reference=reference, mention_author=False,  # type: ignore[arg-type]
                                  allowed_mentions=NO_MENTIONS, **_view(rate_job))

    async def edit(self, ref: Any, text: str, rate_job: str = "") -> Any:
        edited = await ref.edit(content=text, allowed_mentions=NO_MENTIONS, **_view(rate_job))
        return edited if edited is not None else ref

    async def delete(self, ref: Any) -> None:
        await ref.delete()


ORIGINAL = None  # the interaction's own response message, edited through its token


class InteractionSurface(Paced):
    """A slash command's deferred response, then follow-ups; a channel message once the token expires.

    Discord's interaction token lives 15 minutes. Past ``deadline`` (monotonic seconds), or if Discord
    already refuses the token (expired: 401 / 50027), the rest of the reply goes to the channel as
    ordinary messages.
    """

    def __init__(self, interaction: discord.Interaction, deadline: float, interval_s: float = 1.0):
        super().__init__(interval_s)
        self.interaction = interaction
        self.deadline = deadline
        self.messages: PostedMessages[discord.WebhookMessage | None] = PostedMessages(self)
        self._fallback: ChannelSurface | None = None

    def close(self) -> None:
        """Nothing shared to leave."""

    async def show(self, update: Update) -> bool:
        if not await self.turn(update.is_final):
            return False
        pieces = update.pieces(self.limits.text_chars)
        if self._fallback is None and time.monotonic() >= self.deadline:
            self._start_fallback()
        if self._fallback is None:
            try:
                await self.messages.sync(pieces, update.rate_job)
                return True
            except discord.HTTPException as exc:
                if not token_is_dead(exc):
                    raise
                metrics.platform_error("discord", exc)
                log.info("interaction %s token refused (%s); answering in the channel",
                         self.interaction.id, exc)
                self._start_fallback()
        assert self._fallback is not None
        await self._fallback.show_pieces(pieces, update.rate_job)
        return True

    async def start_afresh(self) -> None:
        if self._fallback is not None:
            await self._fallback.start_afresh()
        else:
            self._start_fallback()  # the token keeps failing: the channel is the sure way

    def _start_fallback(self) -> None:
        channel = self.interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise RuntimeError(f"interaction {self.interaction.id} has no channel to fall back to")
        self._fallback = ChannelSurface(channel, interval_s=self.limits.edit_interval_s)

    # ---- MessageSurface: the deferred response is the first message, follow-ups the rest

    def ref_key(self, ref: discord.WebhookMessage | None) -> str:
        return str(ref.id) if ref is not None else "original"

    def ref_of(self, key: str) -> discord.WebhookMessage | None:
        raise RuntimeError("an interaction's messages are not kept across restarts")  # no store is given

    async def post(self, text: str, index: int, rate_job: str = "") -> discord.WebhookMessage | None:
        view = _view(rate_job)
        if index == 0:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **view)
            return ORIGINAL
        return await self.interaction.followup.send(text, wait=True, allowed_mentions=NO_MENTIONS, **view)

    async def edit(self, ref: discord.WebhookMessage | None, text: str,
                   rate_job: str = "") -> discord.WebhookMessage | None:
        view = _view(rate_job)
        if ref is ORIGINAL:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **view)
            return ORIGINAL
        return await ref.edit(content=text, allowed_mentions=NO_MENTIONS, **view)

    async def delete(self, ref: discord.WebhookMessage | None) -> None:
        if ref is ORIGINAL:
            await self.interaction.edit_original_response(content="…", allowed_mentions=NO_MENTIONS)
        else:
            await ref.delete()


@dataclass
class _FileLine:
    file_name: str
    state: str
    is_done: bool


class IngestBoard:
    """One status message for the files of one Discord message, edited as each is indexed or fails.

    A :class:`bot.pipeline.Reply` for several ingest jobs at once; its status words are the shared
    reply model's (:func:`bot.reply.status_line`).
    """

    def __init__(self, surface: ChannelSurface):
        self.surface = surface
        self.finished = asyncio.Event()
        self._lines: dict[str, _FileLine] = {}  # by job id, or by a local key for files never sent
        self._dirty = False

    def interval_s(self) -> float:
        return self.surface.interval_s()

    def _done(self) -> None:
        if self.is_done:
            self.finished.set()

    async def _show(self, text: str) -> None:
        await self.surface.show(Update("", text, is_final=True))

    @property
    def is_done(self) -> bool:
        return all(line.is_done for line in self._lines.values())

    @property
    def has_lines(self) -> bool:
        return bool(self._lines)

    @property
    def job_ids(self) -> list[str]:
        """The ingest jobs it shows (not the files turned down here)."""
        return [key for key in self._lines if not key.startswith("local:")]

    def add(self, job_id: str, file_name: str) -> None:
        self._lines[job_id] = _FileLine(file_name, "downloaded, waiting for a worker…", is_done=False)

    def fail(self, file_name: str, reason: str) -> None:
        """A file the adapter itself turned down (not a PDF, too big, download failed)."""
        self._lines[f"local:{len(self._lines)}"] = _FileLine(file_name, f"❌ {reason}", is_done=True)

    async def show_now(self) -> None:
        await self._show(self._text())
        self._done()  # only files turned down here: nothing to wait for

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        if attempt >= FRESH_MESSAGES_FROM_ATTEMPT:
            await self.surface.start_afresh()
        await self._note(event)
        await self._flush()
        self._done()

    async def feed(self, event: ReplyEvent) -> None:
        await self._note(event)
        if self._dirty and await self.surface.turn(is_final=False):
            self._dirty = False
            await self.surface.show_pieces(split_message(self._text(), MESSAGE_LIMIT))

    async def _note(self, event: ReplyEvent) -> None:
        line = self._lines.get(event.job_id)
        if line is None or line.is_done:
            return
        if event.type in (ReplyType.QUEUED, ReplyType.PROGRESS):
            line.state = status_line(event, MARKUP, idle=FILE_QUEUED)
        elif event.type is ReplyType.FINAL:
            line.state, line.is_done = f"✅ {event.text or 'indexed'}", True
        elif event.type is ReplyType.ERROR:
            line.state, line.is_done = f"❌ {event.text}", True
        self._dirty = True

    async def flush(self) -> None:
        if self._dirty:
            await self._flush()

    async def give_up(self) -> None:
        for line in self._lines.values():
            if not line.is_done:
                line.state, line.is_done = "❌ no worker answered in time; please upload it again later", True
        self._done()
        await self._flush()

    async def _flush(self) -> None:
        self._dirty = False
        await self._show(self._text())

    def _text(self) -> str:
        return "\n".join(f"📄 **{discord.utils.escape_markdown(line.file_name)}** — {line.state}"
                         for line in self._lines.values())
