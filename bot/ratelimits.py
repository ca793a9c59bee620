"""Rate-limit state as the platforms define it: per method (or route) and per workspace, honouring Retry-After.

A 429 names how long the platform wants to hear nothing more of that method from that workspace.
:class:`RateGate` remembers it, so no other answer calls the same method there until the time has
passed: a call is made inside :meth:`RateGate.hold`, which waits out a Retry-After and lets one call
of a method at a time go to one workspace (so no call is already on its way when a 429 comes back;
the platforms' limits are far below what one call at a time allows); intermediate updates check
:meth:`RateGate.is_open` first and skip while it is closed; after a 429, :meth:`RateGate.close_for`. Slack's tiers are
per method per workspace (https://docs.slack.dev/apis/web-api/rate-limits); Discord's buckets are per
route and its major parameter (the channel), https://discord.com/developers/docs/topics/rate-limits,
which discord.py already keeps, so only Slack's adapter keys this gate itself.

The SDK's own 429 handler waits Retry-After before retrying the one call that met it; it records the
429 here through :data:`current_workspace`, which the caller sets around its call (the handler runs
inside that call, in the same context).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Callable

current_workspace: contextvars.ContextVar[str] = contextvars.ContextVar("current_workspace", default="")


class RateGate:
    """When each (workspace, method) may be called again; shared by every reply of an adapter."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._closed_until: dict[tuple[str, str], float] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def close_for(self, workspace: str, method: str, retry_after_s: float) -> None:
        """The platform answered 429 with ``Retry-After: retry_after_s``: hold that method there."""
        key = (workspace, method)
        until = self._clock() + max(0.0, retry_after_s)
        self._closed_until[key] = max(until, self._closed_until.get(key, 0.0))

    def wait_s(self, workspace: str, method: str) -> float:
        """Seconds until ``method`` may be called in ``workspace`` again (0: now)."""
        until = self._closed_until.get((workspace, method))
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._closed_until[(workspace, method)]
            return 0.0
        return left

    def is_open(self, workspace: str, method: str) -> bool:
        return self.wait_s(workspace, method) == 0.0

    async def wait(self, workspace: str, method: str) -> None:
        """Return once ``method`` may be called in ``workspace`` (at once when no 429 holds it)."""
        while (left := self.wait_s(workspace, method)) > 0:
            await asyncio.sleep(left)

    @contextlib.asynccontextmanager
    async def hold(self, workspace: str, method: str) -> AsyncIterator[None]:
        """The one turn to call ``method`` in ``workspace``: after any Retry-After, one call at a time."""
        lock = self._locks.setdefault((workspace, method), asyncio.Lock())
        async with lock:
            await self.wait(workspace, method)
            yield
