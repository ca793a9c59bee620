"""Streaming an answer into chat: post once, then edit at most once per interval as text grows."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from jobs.protocol import ReplyEvent, ReplyType

# render(text, is_final) -> False when the update was not shown (skipped, rate limited): flush retries it.
Render = Callable[[str, bool], Awaitable[bool | None]]


class StreamedAnswer:
    """Accumulates a job's reply events and decides when the visible message should be updated.

    Platform-neutral: ``render`` is called with the full text to show whenever an update is due (the
    first delta, then at most every ``min_interval_s``, which may be a function of the moment, and
    always for the final event). Attempts: a worker that takes over a job streams from the start
    again (a higher ``attempt``, or ``seq`` starting over), which replaces the text; events of an
    earlier attempt that arrive late are ignored.
    """

    def __init__(self, render: Render, min_interval_s: float | Callable[[], float] = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self._render = render
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._last_render_at: float | None = None
        self.text = ""
        self._attempt = 1
        self._last_seq = 0
        self.final: ReplyEvent | None = None
        self._shown = ""

    @property
    def interval_s(self) -> float:
        interval = self._min_interval_s
        return interval() if callable(interval) else interval

    def accepts(self, event: ReplyEvent) -> bool:
        """Take note of ``event``'s attempt; False when it belongs to an attempt already replaced."""
        if event.attempt < self._attempt:
            return False
        if event.attempt > self._attempt or (0 < event.seq <= self._last_seq):
            # A worker died mid-answer and another started over: replace the text, do not append to it.
            self._attempt = event.attempt
            self.text = ""
        self._last_seq = event.seq
        return True

    async def feed(self, event: ReplyEvent) -> None:
        if not self.accepts(event):
            return
        if event.type is ReplyType.DELTA:
            self.text += event.text
            now = self._clock()
            if self._last_render_at is None or now - self._last_render_at >= self.interval_s:
                await self._show(self.text, is_final=False)
        elif event.is_terminal:
            self.final = event
            await self._show(event.text, is_final=True)

    async def flush(self) -> None:
        """Show text that arrived since the last update (call from a periodic timer)."""
        if self.final is None and self.text != self._shown:
            await self._show(self.text, is_final=False)

    async def _show(self, text: str, is_final: bool) -> None:
        self._last_render_at = self._clock()
        if await self._render(text, is_final) is not False:
            self._shown = text
