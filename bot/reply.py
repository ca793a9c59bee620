"""One reply, modelled once for every platform: status, streamed body, pieces, sources, ratings, the last words.

An :class:`AnswerReply` is a :class:`bot.pipeline.Reply`: it turns one job's reply events into
:class:`Update` s, and a *surface* shows them. The rules live here, once:

- status lines ("Queued, 2 ahead of you…", progress) until answer text arrives, throttled like edits;
- the streamed body grows at most once per the surface's interval (:class:`bot.streaming.StreamedAnswer`
  also replaces the text when another worker starts the job over);
- the final answer is the body and its sources (file, page, a link where the platform has one); an
  error is the worker's sentence after a warning sign; a job silent for too long gets :data:`GIVE_UP`;
- an ask's final answer carries the 👍/👎 controls (``rate_job``), wherever and whenever it is shown;
- the fresh-message rule: a final answer whose showing failed twice is shown in new messages.

A surface is one way of showing a reply (Slack's native stream, Slack post-and-edit, a Discord channel
message, a Discord interaction, the console). It declares its :class:`SurfaceLimits`, splits an update
into pieces at its length limit with :meth:`Update.pieces`, and keeps to its platform's rate limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.render import format_sources, split_message
from bot.streaming import StreamedAnswer
from core.documents import Citation
from core.formats import ACCEPTED
from jobs.protocol import ReplyEvent, ReplyType

FRESH_MESSAGES_FROM_ATTEMPT = 3  # an answer whose showing failed twice is posted as new messages
STREAMING_CURSOR = " …"  # ends a message whose text is still growing, on surfaces that edit
THINKING = "Thinking…"
FILE_QUEUED = "Queued…"
NO_ANSWER = "(no answer)"
GIVE_UP = "No worker answered in time. Please ask again later."
NOT_A_FORMAT = f"is not a format I read; I index {ACCEPTED}."  # after a file's name, on every platform
IDLE_WAIT_S = 1.0  # how often the router wakes a reply whose surface shows every update at once
LinkResolver = Callable[[Citation], str | None]
Links = Callable[[Sequence[Citation]], Awaitable[LinkResolver]]  # the links for an answer's citations


@dataclass(frozen=True)
class SurfaceLimits:
    """What a surface allows: its message length, how often one reply may change, whether it streams natively."""

    text_chars: int
    edit_interval_s: float
    streams_natively: bool = False


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Markup:
    """How a platform writes the few marks a reply uses, and how it escapes model and file text."""

    warn: str
    wait: str = "⏳"
    escape: Callable[[str], str] = _same
    bold: Callable[[str], str] = _same


@dataclass(frozen=True)
class Update:
    """What a reply should read now. ``body`` grows while ``is_streaming``; ``tail`` is the sources block."""

    header: str
    body: str
    tail: str = ""
    is_final: bool = False
    is_streaming: bool = False
    rate_job: str = ""  # the job whose 👍/👎 the last piece carries ("" for none)
    queue_position: int = 0  # a status line: how many jobs are ahead (0: none, or not a queue report)

    @property
    def text(self) -> str:
        """The whole reply as one text; a still-growing body ends with :data:`STREAMING_CURSOR`."""
        body = self.body + STREAMING_CURSOR if self.is_streaming else self.body
        return "\n\n".join(part for part in (self.header, body, self.tail) if part)

    def pieces(self, limit: int) -> list[str]:
        """The text cut into messages of at most ``limit`` characters (code blocks kept renderable)."""
        return split_message(self.text, limit) or [NO_ANSWER]


class Surface(Protocol):
    """One way of showing a reply on a platform."""

    limits: SurfaceLimits

    def interval_s(self) -> float:
        """How often this reply may be updated now (a shared budget may make it longer than the limit)."""

    async def show(self, update: Update) -> bool:
        """Show ``update``. Intermediate: False when skipped (rate limited, refused); final: raise if not shown."""

    async def start_afresh(self) -> None:
        """Forget the messages shown so far: the next update posts new ones."""

    def close(self) -> None:
        """The reply has ended (it stops counting in shared budgets)."""


def status_line(event: ReplyEvent, markup: Markup, subject: str = "", idle: str = THINKING) -> str:
    """The one line a queued or progress event shows: ``⏳ report.pdf: reading pages (3/9)``; ``idle`` is
    what a job taken up at once says (a question thinks; a file is queued)."""
    if event.type is ReplyType.QUEUED:
        said = f"Queued, {event.position} ahead of you…" if event.position else idle
    else:
        count = f" ({event.done}/{event.total})" if event.total else ""
        said = f"{markup.escape(event.text) or 'Working…'}{count}"
    return f"{markup.wait} {subject}{said}"


def error_line(text: str, markup: Markup) -> str:
    return f"{markup.warn} {markup.escape(text)}"


class AnswerReply:
    """One job's reply: status lines, then the streamed answer, then the answer with its sources or the error."""

    def __init__(self, surface: Surface, markup: Markup, *, is_rated: bool = False, header: str = "",
                 subject: str = "", links: Links | None = None):
        self.surface = surface
        self.markup = markup
        self.is_rated = is_rated  # an ask: its final answer carries 👍/👎
        self.header = header  # shown above everything (e.g. who asked what, for a slash command)
        self.subject = markup.bold(markup.escape(subject)) + ": " if subject else ""  # a file being indexed
        self.links = links
        self.stream = StreamedAnswer(self._render, min_interval_s=surface.interval_s)
        self.finished = asyncio.Event()  # set once nothing more is expected
        self.is_done = False
        self._status_at = float("-inf")

    def interval_s(self) -> float:
        return self.surface.interval_s() or IDLE_WAIT_S

    async def show_placeholder(self) -> None:
        """A sign of life before any event (Discord shows one at once)."""
        self._status_at = asyncio.get_running_loop().time()
        await self.surface.show(Update(self.header, f"{self.markup.wait} {self.subject}{THINKING}"))

    async def feed(self, event: ReplyEvent) -> None:
        if event.is_terminal:
            await self.finish(event, attempt=1)
        elif event.type in (ReplyType.QUEUED, ReplyType.PROGRESS):
            # Once answer text streams, it is the better sign of life; status lines are throttled like it.
            now = asyncio.get_running_loop().time()
            if self.stream.text or now - self._status_at < self.surface.interval_s():
                return
            self._status_at = now
            idle = FILE_QUEUED if self.subject else THINKING
            position = event.position or 0 if event.type is ReplyType.QUEUED else 0
            await self.surface.show(Update(self.header, status_line(event, self.markup, self.subject, idle),
                                           queue_position=position))
        else:
            await self.stream.feed(event)

    async def flush(self) -> None:
        await self.stream.flush()

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        """Show the terminal event; raises when the surface could not (the router tries again)."""
        if attempt >= FRESH_MESSAGES_FROM_ATTEMPT:
            await self.surface.start_afresh()
        self.stream.final = event
        await self._render(event.text, is_final=True)
        self._end()

    async def give_up(self) -> None:
        self._end()
        await self.surface.show(Update(self.header, f"{self.markup.warn} {GIVE_UP}", is_final=True))

    def _end(self) -> None:
        self.is_done = True
        self.surface.close()
        self.finished.set()

    async def _render(self, text: str, is_final: bool) -> bool:
        final = self.stream.final
        if not is_final or final is None:
            return await self.surface.show(Update(self.header, self.markup.escape(text), is_streaming=True))
        if final.type is ReplyType.ERROR:
            return await self.surface.show(Update(self.header, error_line(final.text, self.markup), is_final=True))
        rate_job = final.job_id if self.is_rated else ""
        tail = await self._sources(final.citations)
        body = self.markup.escape(final.text) or ("" if tail else NO_ANSWER)
        return await self.surface.show(Update(self.header, body, tail, is_final=True, rate_job=rate_job))

    async def _sources(self, citations: Sequence[Citation]) -> str:
        if not citations:
            return ""
        link = await self.links(citations) if self.links else None
        escape = self.markup.escape
        shown = [dataclasses.replace(c, file_name=escape(c.file_name)) for c in citations]
        by_shown = {id(s): c for s, c in zip(shown, citations, strict=True)}
        return format_sources(shown, (lambda s: link(by_shown[id(s)])) if link else None)


class QuietReply:
    """A reply nobody sees: a file shared along with a question, whose answer says the rest."""

    def __init__(self) -> None:
        self.is_done = False

    def interval_s(self) -> float:
        return IDLE_WAIT_S

    async def feed(self, event: ReplyEvent) -> None:
        """Progress of a quiet job is not shown."""

    async def flush(self) -> None:
        """Nothing is pending."""

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        self.is_done = True

    async def give_up(self) -> None:
        self.is_done = True
