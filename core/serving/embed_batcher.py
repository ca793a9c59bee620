"""Concurrent embedding calls share one model call: the query embeddings of asks in flight go together.

No timer: while one call runs on the device, the calls that arrive queue up; when it ends, the first of
them embeds everything queued in one batch and hands each caller its own rows. A lone call runs at
once, so a single ask waits for nothing; under load the device sees one batch instead of many.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EmbedFn = Callable[[list[str]], np.ndarray]  # texts -> (len(texts), dim) float32


@dataclass(eq=False)
class _Call:
    texts: list[str]
    vectors: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class EmbedCoalescer:
    def __init__(self, embed: EmbedFn):
        self._embed = embed
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._is_busy = False
        self.model_calls = 0

    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    def embed(self, texts: list[str]) -> np.ndarray:
        """``texts``' vectors, computed together with whatever other threads asked for meanwhile."""
        call = _Call(list(texts))
        with self._cond:
            self._pending.append(call)
            while self._is_busy and not call.done:
                self._cond.wait()
            if not call.done:  # this thread leads the next batch: everything queued so far
                batch, self._pending, self._is_busy = self._pending, [], True
        if not call.done:
            self._run(batch)
        if call.error is not None:
            raise call.error
        assert call.vectors is not None
        return call.vectors

    def _run(self, batch: list[_Call]) -> None:
        try:
            self.model_calls += 1
            vectors = self._embed([t for c in batch for t in c.texts])
            start = 0
            for c in batch:
                c.vectors = vectors[start:start + len(c.texts)]
                start += len(c.texts)
        except BaseException as exc:  # each caller gets the failure, none waits forever
            for c in batch:
                c.error = exc
        finally:
            with self._cond:
                for c in batch:
                    c.done = True
                self._is_busy = False
                self._cond.notify_all()
