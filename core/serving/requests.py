"""What a caller gets back from the engine: a handle per request, iterated for its tokens and text.

The engine thread puts events on the handle's queue; the caller's thread reads them. ``cancel`` may be
called from any thread; the engine lets the request go at its next step and the iteration ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

WAIT_POLL_S = 0.1  # how long the reader waits for an event before looking at its own cancel again


class FinishReason(StrEnum):
    EOS = "eos"
    STOP = "stop"  # one of the request's stop strings appeared
    LENGTH = "length"  # max_new_tokens, or the end of the cache
    CANCELLED = "cancelled"
    ERROR = "error"


class RequestFailed(RuntimeError):
    """This request, and only it, could not be served; the message says why in words for the user."""


@dataclass(frozen=True)
class RequestParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    token_id: int
    text: str  # text this token makes safe to show: may be empty (held back for a stop string or UTF-8)


_END = object()


class Handle:
    """One request in the engine. Iterate it for ``TokenEvent``s; it ends when the request finishes."""

    def __init__(self, request_id: int):
        self.request_id = request_id
        self.finish_reason: FinishReason | None = None
        self.error: str | None = None
        self.tail = ""  # text released at the end (held back in case it began a stop string)
        self.token_ids: list[int] = []
        self._events: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        """Ask the engine to stop this request; safe from any thread, any number of times."""
        self._cancelled.set()

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the request has finished; True if it has."""
        return self._done.wait(timeout_s)

    def __iter__(self) -> Iterator[TokenEvent]:
        return self.events()

    def events(self, cancel: threading.Event | None = None) -> Iterator[TokenEvent]:
        """The request's events as they come; ``cancel`` (the caller's own flag) cancels it and ends them."""
        while True:
            if cancel is not None and cancel.is_set():
                self.cancel()
                return
            try:
                item = self._events.get(timeout=WAIT_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                if self.finish_reason is FinishReason.ERROR:
                    raise RequestFailed(self.error or "generation failed")
                return
            assert isinstance(item, TokenEvent)
            yield item

    def text(self) -> str:
        """Read the whole answer as text (blocks until it ends)."""
        return "".join(e.text for e in self) + self.tail

    # --- engine side ------------------------------------------------------------------------------

    def _emit(self, event: TokenEvent) -> None:
        self.token_ids.append(event.token_id)
        self._events.put(event)

    def _finish(self, reason: FinishReason, error: str | None = None, tail: str = "") -> None:
        if self._done.is_set():
            return
        self.finish_reason, self.error, self.tail = reason, error, tail
        self._done.set()
        self._events.put(_END)
