"""Concurrent embedding calls coalesce into one model call, each caller getting its own rows back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.embedding import Embedder
from core.serving.embed_batcher import EmbedCoalescer

DEADLINE_S = 60


class Gate:
    """Wraps the real embedder's ``embed``: the first call waits for the gate; every call's size is noted."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.sizes.append(len(texts))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.opened.wait(DEADLINE_S)
        return self.embedder.embed(texts)


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_calls_that_arrive_during_a_batch_share_the_next_one(embedder: Embedder) -> None:
    gate = Gate(embedder)
    coalescer = EmbedCoalescer(gate)
    questions = [["what does page two say"], ["budget"], ["revenue in the third quarter", "colours"], ["alpha"]]
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = coalescer.embed(questions[i])

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    assert gate.entered.wait(DEADLINE_S)  # the first call is on the model
    others = [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for t in others:
        t.start()
    wait_for(lambda: coalescer.pending_count() == 3, "three queued calls")
    gate.opened.set()
    for t in [first, *others]:
        t.join(DEADLINE_S)

    assert gate.sizes == [1, 4]  # one call alone, then the three queued ones as one batch
    for i, texts in enumerate(questions):
        assert results[i].shape == (len(texts), embedder.dim)
        np.testing.assert_allclose(results[i], embedder.embed(texts), atol=1e-5)


def test_a_failure_reaches_its_caller_and_the_next_call_runs(embedder: Embedder) -> None:
    calls: list[list[str]] = []

    def flaky(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return embedder.embed(texts)

    coalescer = EmbedCoalescer(flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        coalescer.embed(["a"])
    assert coalescer.embed(["a"]).shape == (1, embedder.dim)  # nothing left stuck behind the failure


def test_gpu_batch_size_follows_free_memory() -> None:
    from core.embedding import GPU_BATCH_LIMITS, batch_size_for_memory

    # MiniLM-L6 at 256 tokens: 8 * 256 * (1536 + 12 * 256) bytes = about 9.4 MB per text
    assert batch_size_for_memory(4 * 10**9, 256, 1536, 12) == 105  # a quarter of 4 GB free
    assert batch_size_for_memory(100 * 10**9, 256, 1536, 12) == GPU_BATCH_LIMITS[1]
    assert batch_size_for_memory(10**8, 256, 1536, 12) == GPU_BATCH_LIMITS[0]
