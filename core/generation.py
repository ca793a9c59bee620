"""The Generator port: a chat model that streams text. Backends live in ``core/backends/``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.15  # tiny models loop without it
    stop: tuple[str, ...] = ()


class Generator(Protocol):
    """A loaded chat model. One instance serves one model.

    ``stream`` is called from at most ``max_concurrency`` threads at once (an optional attribute; absent
    means 1: the worker never calls a backend that is not thread-safe concurrently).
    """

    name: str
    context_tokens: int  # the model's window, prompt and answer together

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens the prompt for ``messages`` takes, chat template included."""
        ...

    def stream(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the answer as text pieces. Stops early when ``cancel`` is set."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...
