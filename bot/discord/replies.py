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
from typing import Protocol

import discord

from bot.discord.settings import MESSAGE_LIMIT
from bot.render import format_sources, split_message
from bot.streaming import StreamedAnswer
from core.documents import Citation
from jobs.protocol import ReplyEvent, ReplyType
from telemetry import metrics

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()  # answers quote users' text; they must never ping anyone
THINKING = "⏳ Thinking…"
STREAMING_CURSOR = " …"
LinkResolver = Callable[[Citation], str | None]


class Surface(Protocol):
    async def show(self, pieces: list[str]) -> None:
        """Make the visible messages read ``pieces``: edit those already posted, post the rest."""


class ChannelSurface:
    """Messages in a channel or thread; the first one replies to ``reference`` when there is one."""

    def __init__(self, channel: discord.abc.Messageable, reference: discord.Message | None = None):
        self.channel = channel
        self.reference = reference
        self.messages: list[discord.Message] = []
        self._shown: list[str] = []

    async def show(self, pieces: list[str]) -> None:
        for index, piece in enumerate(pieces):
            if index < len(self.messages):
                if self._shown[index] != piece:
                    self.messages[index] = await self.messages[index].edit(content=piece,
                                                                           allowed_mentions=NO_MENTIONS)
                    self._shown[index] = piece
                continue
            reference = None
            if index == 0 and self.reference is not None:
                reference = self.reference.to_reference(fail_if_not_exists=False)
            sent = await self.channel.send(piece, reference=reference, mention_author=False,  # type: ignore[arg-type]
                                           allowed_mentions=NO_MENTIONS)
            self.messages.append(sent)
            self._shown.append(piece)
        # The final text can be shorter than the streamed one (an error after partial text, say).
        while len(self.messages) > len(pieces):
            await self.messages.pop().delete()
            self._shown.pop()


class InteractionSurface:
    """A slash command's deferred response, then follow-ups; a channel message once the token expires.

    Discord's interaction token lives 15 minutes. Past ``deadline`` (monotonic seconds), or if Discord
    already refuses the token, the rest of the reply goes to the channel as ordinary messages.
    """

    def __init__(self, interaction: discord.Interaction, deadline: float):
        self.interaction = interaction
        self.deadline = deadline
        self._followups: list[discord.WebhookMessage] = []
        self._shown: list[str] = []
        self._fallback: ChannelSurface | None = None

    async def show(self, pieces: list[str]) -> None:
        if self._fallback is None and time.monotonic() >= self.deadline:
            self._start_fallback()
        if self._fallback is None:
            try:
                await self._show_via_token(pieces)
                return
            except (discord.NotFound, discord.Forbidden) as exc:
                metrics.platform_error("discord", exc)
                log.info("interaction %s token refused (%s); answering in the channel",
                         self.interaction.id, exc)
                self._start_fallback()
        assert self._fallback is not None
        await self._fallback.show(pieces)

    def _start_fallback(self) -> None:
        channel = self.interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise RuntimeError(f"interaction {self.interaction.id} has no channel to fall back to")
        self._fallback = ChannelSurface(channel)

    async def _show_via_token(self, pieces: list[str]) -> None:
        for index, piece in enumerate(pieces):
            if index < len(self._shown) and self._shown[index] == piece:
                continue
            if index == 0:
                await self.interaction.edit_original_response(content=piece, allowed_mentions=NO_MENTIONS)
            elif index - 1 < len(self._followups):
                await self._followups[index - 1].edit(content=piece, allowed_mentions=NO_MENTIONS)
            else:
                sent = await self.interaction.followup.send(piece, wait=True, allowed_mentions=NO_MENTIONS)
                self._followups.append(sent)
            if index < len(self._shown):
                self._shown[index] = piece
            else:
                self._shown.append(piece)


class ReplyView:
    """Consumes one or more jobs' reply events from ``events`` and keeps a surface up to date."""

    def __init__(self, surface: Surface, interval_s: float):
        self.surface = surface
        self.interval_s = interval_s
        self.events: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        self.finished = asyncio.Event()
        self._last_show_at: float | None = None
        self._show_lock = asyncio.Lock()

    @property
    def is_done(self) -> bool:
        raise NotImplementedError

    async def feed(self, event: ReplyEvent) -> None:
        raise NotImplementedError

    async def tick(self) -> None:
        """Called when no event came for ``interval_s``: show what is pending."""

    async def give_up(self) -> None:
        """No reply came in time."""

    async def run(self, timeout_s: float) -> None:
        """Feed events until the view is done (or ``timeout_s`` passes), ticking between them."""
        deadline = time.monotonic() + timeout_s
        try:
            while not self.is_done:
                if time.monotonic() >= deadline:
                    await self.give_up()
                    break
                try:
                    event = await asyncio.wait_for(self.events.get(), timeout=self.interval_s)
                except TimeoutError:
                    await self._guarded(self.tick())
                    continue
                await self._guarded(self.feed(event))
        finally:
            self.finished.set()

    async def _guarded(self, step: Awaitable[None]) -> None:
        # A failed Discord call must not end the view: later events may still get through.
        try:
            await step
        except discord.HTTPException as exc:
            metrics.platform_error("discord", exc)
            log.warning("Discord refused an update (%s %s)", exc.status, exc.text)

    async def _show(self, text: str) -> None:
        """Show ``text`` (split to fit), waiting first if the last edit was under ``interval_s`` ago."""
        async with self._show_lock:
            if self._last_show_at is not None:
                wait_s = self.interval_s - (time.monotonic() - self._last_show_at)
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            self._last_show_at = time.monotonic()
            await self.surface.show(split_message(text, MESSAGE_LIMIT))

    def _is_due(self) -> bool:
        return self._last_show_at is None or time.monotonic() - self._last_show_at >= self.interval_s


class AnswerView(ReplyView):
    """One job's reply: status lines until text arrives, then the streamed answer and its sources."""

    def __init__(self, surface: Surface, interval_s: float,
                 links: Callable[[], Awaitable[LinkResolver]] | None = None):
        super().__init__(surface, interval_s)
        self._links = links
        self.stream = StreamedAnswer(self._render, min_interval_s=interval_s)

    @property
    def is_done(self) -> bool:
        return self.stream.final is not None

    async def show_placeholder(self) -> None:
        await self._show(THINKING)

    async def feed(self, event: ReplyEvent) -> None:
        if event.type is ReplyType.QUEUED and not self.stream.text and self._is_due():
            ahead = event.position or 0
            await self._show(f"⏳ Queued, {ahead} ahead of you…" if ahead else THINKING)
        elif event.type is ReplyType.PROGRESS and not self.stream.text and self._is_due():
            await self._show(f"⏳ {event.text or 'Working…'}")
        else:
            await self.stream.feed(event)

    async def tick(self) -> None:
        if self._is_due():
            await self.stream.flush()

    async def give_up(self) -> None:
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
        await self._show(f"{text}\n\n{sources}" if sources else text or "(no answer)")


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

    async def feed(self, event: ReplyEvent) -> None:
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
        if self.is_done or self._is_due():
            await self._flush()

    async def tick(self) -> None:
        if self._dirty:
            await self._flush()

    async def give_up(self) -> None:
        for line in self._lines.values():
            if not line.is_done:
                line.state, line.is_done = "❌ no worker answered in time; please upload it again later", True
        await self._flush()

    async def _flush(self) -> None:
        self._dirty = False
        await self._show(self._text())

    def _text(self) -> str:
        return "\n".join(f"📄 **{discord.utils.escape_markdown(line.file_name)}** — {line.state}"
                         for line in self._lines.values())
