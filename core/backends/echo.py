"""A generator that echoes the question back: no model, no retrieval needed, for tests of the queue.

``weights`` may hold options as ``key=value`` pairs separated by ``;``. ``delay_s`` paces the pieces
(so a test can kill a worker mid-answer). Echo is thread-safe: ``max_concurrency`` (default 1) says how
many answers a worker may run on it at once. The ``test_``-prefixed options exist only to inject faults
or hold answers for a test, and are off unless a models file sets them:

- ``test_crash_marker``: a question containing it SIGKILLs the worker process (a poison job);
- ``test_hang_marker``: a question containing it blocks generation and ignores ``cancel``;
- ``test_barrier``: N answers wait for each other before their first piece (an answer fails if N never
  run at once); the log line it writes then proves N answers were in generation together;
- ``test_hold_file``: after its first piece an answer waits until this file exists (or its cancel).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

from core.generation import ChatMessage, GenerationParams
from core.registry import ModelSpec

log = logging.getLogger(__name__)

HANG_FOR_S = 3600.0
BARRIER_TIMEOUT_S = 120.0
HOLD_POLL_S = 0.05


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
        self.max_concurrency = int(options.get("max_concurrency", "1"))
        parties = int(options.get("test_barrier", "0"))
        self.barrier = threading.Barrier(parties, timeout=BARRIER_TIMEOUT_S) if parties > 1 else None
        self.hold_file = options.get("test_hold_file", "")
        self._streaming = 0  # answers in generation now; the most so far is logged (tests read it)
        self._most_streaming = 0
        self._count_lock = threading.Lock()

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str]:
        with self._count_lock:
            self._streaming += 1
            if self._streaming > self._most_streaming:
                self._most_streaming = self._streaming
                log.info("echo: %d answer(s) in generation at once, the most so far", self._streaming)
        try:
            yield from self._stream(messages, params, cancel)
        finally:
            with self._count_lock:
                self._streaming -= 1

    def _stream(self, messages: list[ChatMessage], params: GenerationParams,
                cancel: threading.Event | None) -> Iterator[str]:
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        if self.crash_marker and self.crash_marker in question:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hang_marker and self.hang_marker in question:
            time.sleep(HANG_FOR_S)  # deliberately deaf to ``cancel``: the worker's watchdog must act
        # BrokenBarrierError if the others never came: the answer fails.
        if self.barrier is not None and self.barrier.wait() == 0:
            log.info("echo: %d answers generating together", self.barrier.parties)
        for index, word in enumerate(question.split()[: params.max_new_tokens]):
            if cancel is not None and cancel.is_set():
                return
            if index == 1 and self.hold_file:
                stop = cancel or threading.Event()
                while not os.path.exists(self.hold_file):
                    if stop.wait(HOLD_POLL_S):
                        return
            if self.delay_s:
                time.sleep(self.delay_s)
            yield word + " "

    def close(self) -> None:
        pass
