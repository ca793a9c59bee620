"""A generator without a language model: it answers with the best sources, verbatim.

Fast and deterministic: for machines too small for an LLM, and for tests of everything around the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from core.generation import ChatMessage, GenerationParams
from core.prompt import sources_in
from core.registry import ModelSpec

QUOTED_SOURCES = 2
NO_SOURCES_REPLY = "I can only quote shared documents, and there are none to quote for this question."


class ExtractiveGenerator:
    def __init__(self, spec: ModelSpec):
        self.name = spec.name
        self.context_tokens = spec.context_tokens

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str]:
        sources = sources_in(messages)[:QUOTED_SOURCES]
        if not sources:
            yield NO_SOURCES_REPLY
            return
        words_left = params.max_new_tokens
        for number, _label, text in sources:
            words = text.split()[:words_left]
            words_left -= len(words)
            yield f"[{number}] "
            for word in words:
                if cancel is not None and cancel.is_set():
                    return
                yield word + " "
            yield "\n"
            if words_left <= 0:
                return

    def close(self) -> None:
        pass
