"""An edit budget per workspace: every answer streaming there shares the platform's edit rate limit.

Slack's chat.update is Tier 3, about 50 calls a minute per workspace, not per message: ten answers
streaming at one edit a second each would meet HTTP 429 within seconds. A :class:`EditBudget` is a
token bucket at the allowed rate, shared by the answers of one workspace. Intermediate edits take a
token only if one is free (else they are skipped; the next one shows the text), so a busy workspace
sees coarser streams, never lost ones. A final edit waits for its token. :meth:`interval_s` tells each
answer how often to try: the per-answer interval grows with the number of answers streaming at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

BURST = 3  # edits that may go at once after a quiet spell


class EditBudget:
    """``calls_per_min`` edits a minute, shared; ``min_interval_s`` is the fastest one answer updates."""

    def __init__(self, calls_per_min: float, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if calls_per_min <= 0:
            raise ValueError("calls_per_min must be positive")
        self.rate_per_s = calls_per_min / 60.0
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._tokens = float(BURST)
        self._at = clock()
        self._streaming: set[str] = set()

    def join(self, answer_id: str) -> None:
        """An answer starts streaming here."""
        self._streaming.add(answer_id)

    def leave(self, answer_id: str) -> None:
        self._streaming.discard(answer_id)

    @property
    def streaming(self) -> int:
        return len(self._streaming)

    def interval_s(self) -> float:
        """How often one answer should update now: the shared rate split among the streaming answers."""
        return max(self.min_interval_s, max(1, self.streaming) / self.rate_per_s)

    def try_spend(self) -> bool:
        """Take a token if one is free now (intermediate edits)."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def spend(self) -> None:
        """Take a token, waiting for one (final edits)."""
        while not self.try_spend():
            await asyncio.sleep((1 - self._tokens) / self.rate_per_s)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(BURST), self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now


class Budgets:
    """One :class:`EditBudget` per workspace, made on first use."""

    def __init__(self, calls_per_min: float, min_interval_s: float = 1.0):
        self.calls_per_min = calls_per_min
        self.min_interval_s = min_interval_s
        self._by_workspace: dict[str, EditBudget] = {}

    def of(self, workspace: str) -> EditBudget:
        budget = self._by_workspace.get(workspace)
        if budget is None:
            budget = self._by_workspace[workspace] = EditBudget(self.calls_per_min, self.min_interval_s)
        return budget
