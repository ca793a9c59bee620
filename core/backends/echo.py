"""A generator that echoes the question back: no model, no retrieval needed, for tests of the queue.

``weights`` may hold options as ``key=value`` pairs separated by ``;``. ``delay_s`` paces the pieces
(so a test can kill a worker mid-answer). The ``test_``-prefixed options exist only to inject faults
and are off unless a models file sets them:

- ``test_crash_marker``: a question containing it SIGKILLs the worker process (a poison job);
- ``test_hang_marker``: a question containing it blocks generation and ignores ``cancel``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec

HANG_FOR_S = 3600.0


def parse_options(weights: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in weights.split(";") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


class EchoGenerator:
    def __init__(self, spec: ModelSpec):
        options = parse_options(spec.weights)
        self.name = spec.name
        self.context_tokens = spec.context_tokens
        self.delay_s = float(options.get("delay_s", "0"))
        self.crash_marker = options.get("test_crash_marker", "")
        self.hang_marker = options.get("test_hang_marker", "")

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str]:
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        if self.crash_marker and self.crash_marker in question:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hang_marker and self.hang_marker in question:
            time.sleep(HANG_FOR_S)  # deliberately deaf to ``cancel``: the worker's watchdog must act
        for word in question.split()[: params.max_new_tokens]:
            if cancel is not None and cancel.is_set():
                return
            if self.delay_s:
                time.sleep(self.delay_s)
            yield word + " "

    def close(self) -> None:
        pass
