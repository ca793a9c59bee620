"""Reply events → Discord messages: post once, edit as text streams, split at 2,000 characters.

A *surface* is where a reply appears (channel messages, or an interaction's response and follow-ups);
a *view* turns a job's reply events into the pieces of text a surface shows. Every view edits its
messages at most once per ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import discord

from bot.discord.feedback import rating_view
from bot.discord.settings import MESSAGE_LIMIT
from bot.messages import PostedMessages
from bot.render import format_sources, split_message
from bot.streaming import StreamedAnswer
from core.documents import Citation
from jobs.protocol import ReplyEvent, ReplyType
from telemetry import metrics

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()  # answers quote users' text; they must never ping anyone
THINKING = "⏳ Thinking…"
STREAMING_CURSOR = " …"
FRESH_MESSAGES_FROM_ATTEMPT = 3  # an answer whose edits failed twice is posted as new messages
LinkResolver = Callable[[Citation], str | None]


# Discord's answers to a webhook token it no longer honours: expired (401 / 50027 Invalid Webhook
# Token), never acknowledged in time (404 / 10062 Unknown interaction), or gone (10015 Unknown Webhook).
DEAD_TOKEN_CODES = frozenset({50027, 10062, 10015})


def token_is_dead(exc: discord.HTTPException) -> bool:
    """True when ``exc`` says the interaction's token is unusable, so only the channel is left."""
    return exc.status in (401, 403, 404) or exc.code in DEAD_TOKEN_CODES


class Surface(Protocol):
    async def show(self, pieces: list[str], rate_job: str = "") -> None:
        """Make the visible messages read ``pieces``: edit those already posted, post the rest.

        With ``rate_job``, the last message carries the 👍/👎 buttons for that job's answer.
        """

    def start_afresh(self) -> None:
        """Forget the messages posted so far: the next show posts new ones (their edits keep failing)."""


class RatedLast:
    """Which message of a shown reply carries the 👍/👎 buttons: the last one of a rated answer."""

    def __init__(self) -> None:
        self.job = ""
        self.count = 0
        self.is_shown = False

    def start(self, rate_job: str, count: int) -> None:
        self.job, self.count, self.is_shown = rate_job, count, False

    def view_kwargs(self, index: int) -> dict[str, Any]:
        """``{"view": ...}`` for the message at ``index`` when it carries the buttons, else nothing
        (a view of None would clear them)."""
        if not self.job or index != self.count - 1:
            return {}
        self.is_shown = True
        return {"view": rating_view(self.job)}

    async def ensure(self, messages: PostedMessages[Any], edit: Callable[[Any, str], Awaitable[Any]]) -> None:
        """Edit the last message once more when its text was already final, so no edit carried them."""
        if self.job and not self.is_shown and messages.posted:
            ref, text = messages.posted[-1]
            messages.posted[-1] = (await edit(ref, text), text)


def _index_of(messages: PostedMessages[Any], ref: Any) -> int:
    return next((i for i, (posted, _) in enumerate(messages.posted) if posted is ref), -1)


class ChannelSurface:
    """Messages in a channel or thread; the first one replies to ``reference`` when there is one."""

    def __init__(self, channel: discord.abc.Messageable | None, reference: discord.Message | None = None,
                 resolve: Callable[[], Awaitable[discord.abc.Messageable]] | None = None):
        self.channel = channel
        self.reference = reference
        self.resolve = resolve  # finds the channel on first use (a reply to a job from before a restart)
        self.messages: PostedMessages[discord.Message] = PostedMessages(self)
        self.rated = RatedLast()

    def start_afresh(self) -> None:
        self.messages.start_afresh()
        self.reference = None

    async def show(self, pieces: list[str], rate_job: str = "") -> None:
        self.rated.start(rate_job, len(pieces))
        await self.messages.sync(pieces)
        await self.rated.ensure(self.messages, self.edit)

    # ---- MessageSurface

    async def post(self, text: str, index: int) -> discord.Message:
        if self.channel is None:
            assert self.resolve is not None, "a ChannelSurface needs a channel or a way to find it"
            self.channel = await self.resolve()
        reference = None
        if index == 0 and self.reference is not None:
            reference = self.reference.to_reference(fail_if_not_exists=False)
        return await self.channel.send(text, reference=reference, mention_author=False,  # type: ignore[arg-type]
                                       allowed_mentions=NO_MENTIONS, **self.rated.view_kwargs(index))

    async def edit(self, ref: discord.Message, text: str) -> discord.Message:
        return await ref.edit(content=text, allowed_mentions=NO_MENTIONS,
                              **self.rated.view_kwargs(_index_of(self.messages, ref)))

    async def delete(self, ref: discord.Message) -> None:
        await ref.delete()


ORIGINAL = None  # the interaction's own response message, edited through its token


class InteractionSurface:
    """A slash command's deferred response, then follow-ups; a channel message once the token expires.

    Discord's interaction token lives 15 minutes. Past ``deadline`` (monotonic seconds), or if Discord
    already refuses the token (expired: 401 / 50027), the rest of the reply goes to the channel as
    ordinary messages.
    """

    def __init__(self, interaction: discord.Interaction, deadline: float):
        self.interaction = interaction
        self.deadline = deadline
        self.messages: PostedMessages[discord.WebhookMessage | None] = PostedMessages(self)
        self.rated = RatedLast()
        self._fallback: ChannelSurface | None = None

    async def show(self, pieces: list[str], rate_job: str = "") -> None:
        if self._fallback is None and time.monotonic() >= self.deadline:
            self._start_fallback()
        if self._fallback is None:
            try:
                self.rated.start(rate_job, len(pieces))
                await self.messages.sync(pieces)
                await self.rated.ensure(self.messages, self.edit)
                return
            except discord.HTTPException as exc:
                if not token_is_dead(exc):
                    raise
                metrics.platform_error("discord", exc)
                log.info("interaction %s token refused (%s); answering in the channel",
                         self.interaction.id, exc)
                self._start_fallback()
        assert self._fallback is not None
        await self._fallback.show(pieces, rate_job)

    def start_afresh(self) -> None:
        if self._fallback is not None:
            self._fallback.start_afresh()
        else:
            self._start_fallback()  # the token keeps failing: the channel is the sure way

    def _start_fallback(self) -> None:
        channel = self.interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise RuntimeError(f"interaction {self.interaction.id} has no channel to fall back to")
        self._fallback = ChannelSurface(channel)

    # ---- MessageSurface: the deferred response is the first message, follow-ups the rest

    async def post(self, text: str, index: int) -> discord.WebhookMessage | None:
        view = self.rated.view_kwargs(index)
        if index == 0:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **view)
            return ORIGINAL
        return await self.interaction.followup.send(text, wait=True, allowed_mentions=NO_MENTIONS, **view)

    async def edit(self, ref: discord.WebhookMessage | None, text: str) -> discord.WebhookMessage | None:
        view = self.rated.view_kwargs(_index_of(self.messages, ref))
        if ref is ORIGINAL:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **view)
            return ORIGINAL
        return await ref.edit(content=text, allowed_mentions=NO_MENTIONS, **view)

    async def delete(self, ref: discord.WebhookMessage | None) -> None:
        if ref is ORIGINAL:
            await self.interaction.edit_original_response(content="…", allowed_mentions=NO_MENTIONS)
        else:
            await ref.delete()


class ReplyView:
    """Keeps a surface up to date with one or more jobs' reply events: a :class:`bot.pipeline.Reply`.

    Intermediate updates go at most once per ``interval_s`` and are skipped when not due (the next
    one shows the text); the final one waits for its turn, and raises if Discord refuses it, so the
    pipeline tries again (from the third attempt in fresh messages).
    """

    def __init__(self, surface: Surface, interval_s: float):
        self.surface = surface
        self._interval_s = interval_s
        self.finished = asyncio.Event()
        self._last_show_at: float | None = None
        self._show_lock = asyncio.Lock()

    @property
    def is_done(self) -> bool:
        raise NotImplementedError

    def interval_s(self) -> float:
        return self._interval_s

    async def feed(self, event: ReplyEvent) -> None:
        raise NotImplementedError

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Called when no event came for ``interval_s``: show what is pending."""

    async def give_up(self) -> None:
        """No reply came in time."""

    def _restart_if(self, attempt: int) -> None:
        if attempt >= FRESH_MESSAGES_FROM_ATTEMPT:
            log.info("showing the answer failed %d times; posting it in fresh messages", attempt - 1)
            self.surface.start_afresh()

    def _done(self) -> None:
        if self.is_done:
            self.finished.set()

    async def _show(self, text: str, rate_job: str = "") -> None:
        """Show ``text`` (split to fit), waiting first if the last edit was under ``interval_s`` ago."""
        async with self._show_lock:
            if self._last_show_at is not None:
                wait_s = self._interval_s - (time.monotonic() - self._last_show_at)
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            self._last_show_at = time.monotonic()
            await self.surface.show(split_message(text, MESSAGE_LIMIT), rate_job)

    def _is_due(self) -> bool:
        return self._last_show_at is None or time.monotonic() - self._last_show_at >= self._interval_s


class AnswerView(ReplyView):
    """One job's reply: status lines until text arrives, then the streamed answer and its sources."""

    def __init__(self, surface: Surface, interval_s: float,
                 links: Callable[[], Awaitable[LinkResolver]] | None = None, is_rated: bool = False):
        super().__init__(surface, interval_s)
        self._links = links
        self.is_rated = is_rated  # an ask: the final answer carries 👍/👎
        self.stream = StreamedAnswer(self._render, min_interval_s=interval_s)
        self._is_done = False

    @property
    def is_done(self) -> bool:
        return self._is_done

    async def show_placeholder(self) -> None:
        await self._show(THINKING)

    async def feed(self, event: ReplyEvent) -> None:
        if event.is_terminal:
            await self.finish(event, attempt=1)
        elif event.type is ReplyType.QUEUED and not self.stream.text and self._is_due():
            ahead = event.position or 0
            await self._show(f"⏳ Queued, {ahead} ahead of you…" if ahead else THINKING)
        elif event.type is ReplyType.PROGRESS and not self.stream.text and self._is_due():
            await self._show(f"⏳ {event.text or 'Working…'}")
        elif event.type is ReplyType.DELTA:
            await self.stream.feed(event)

    async def flush(self) -> None:
        if self._is_due():
            await self.stream.flush()

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        self._restart_if(attempt)
        self.stream.final = event
        await self._render(event.text, is_final=True)
        self._is_done = True
        self._done()

    async def give_up(self) -> None:
        self._is_done = True
        self._done()
        await self._show("⚠️ No worker answered in time. Please ask again later.")

    async def _render(self, text: str, is_final: bool) -> None:
        if not is_final:
            await self._show(text + STREAMING_CURSOR)
            return
        final = self.stream.final
        if final is not None and final.type is ReplyType.ERROR:
            await self._show(f"⚠️ {text}")
            return
        citations = final.citations if final is not None else ()
        link = await self._links() if self._links and citations else None
        sources = format_sources(citations, link)
        rate_job = final.job_id if final is not None and self.is_rated else ""
        await self._show(f"{text}\n\n{sources}" if sources else text or "(no answer)", rate_job)


@dataclass
class _FileLine:
    file_name: str
    state: str
    is_done: bool


class IngestBoard(ReplyView):
    """One status message for the files of one Discord message, edited as each is indexed or fails."""

    def __init__(self, surface: Surface, interval_s: float):
        super().__init__(surface, interval_s)
        self._lines: dict[str, _FileLine] = {}  # by job id, or by a local key for files never sent
        self._dirty = False

    @property
    def is_done(self) -> bool:
        return all(line.is_done for line in self._lines.values())

    @property
    def has_lines(self) -> bool:
        return bool(self._lines)

    def add(self, job_id: str, file_name: str) -> None:
        self._lines[job_id] = _FileLine(file_name, "downloaded, waiting for a worker…", is_done=False)

    def fail(self, file_name: str, reason: str) -> None:
        """A file the adapter itself turned down (not a PDF, too big, download failed)."""
        self._lines[f"local:{len(self._lines)}"] = _FileLine(file_name, f"❌ {reason}", is_done=True)

    async def show_now(self) -> None:
        await self._show(self._text())
        self._done()  # only files turned down here: nothing to wait for

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        self._restart_if(attempt)
        await self._note(event)
        await self._flush()
        self._done()

    async def feed(self, event: ReplyEvent) -> None:
        await self._note(event)
        if self._is_due():
            await self._flush()

    async def _note(self, event: ReplyEvent) -> None:
        line = self._lines.get(event.job_id)
        if line is None or line.is_done:
            return
        if event.type is ReplyType.QUEUED:
            line.state = f"queued, {event.position} ahead…" if event.position else "queued…"
        elif event.type is ReplyType.PROGRESS:
            counts = f" {event.done}/{event.total}" if event.total else ""
            line.state = f"{event.text or 'indexing'}{counts}…"
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
