"""The background tasks an adapter starts (answers to submit, uploads to wait for), kept and ended in one place.

asyncio holds tasks only weakly, so a task nobody keeps can vanish mid-run; and a stopping adapter
must cancel its tasks and not wait forever for one that swallows its cancel inside a library call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class TaskSet:
    """Tasks started with :meth:`spawn`, kept until they end; :meth:`close` cancels them, bounded."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self.tasks.discard)
        return task

    def add(self, task: asyncio.Task[Any]) -> None:
        """Keep a task made elsewhere (it is cancelled with the rest)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self, timeout_s: float, *extra: asyncio.Task[Any] | None) -> int:
        """Cancel every task (and ``extra``) and wait for them, at most ``timeout_s``; how many had not stopped."""
        tasks = [t for t in [*extra, *self.tasks] if t is not None]
        for task in tasks:
            task.cancel()
        if not tasks:
            return 0
        # Bounded: a task that loses its cancel inside a library call must not keep a stopping process
        # (a rolling deploy, SIGTERM) from exiting; replies it had not shown stay pending in the reply
        # stream for the next adapter to read.
        _, stuck = await asyncio.wait(tasks, timeout=timeout_s)
        if stuck:
            log.warning("%d task(s) did not stop within %.0f s of shutdown; leaving them", len(stuck), timeout_s)
        return len(stuck)


_UNCANCELLED: set[asyncio.Task[Any]] = set()  # steps finishing after their caller was cancelled


async def finish_anyway(step: Coroutine[Any, Any, T]) -> T:
    """Run ``step`` to its end even if the caller is cancelled meanwhile (the caller still sees the cancel).

    For a platform call and the record of what it did, which must not be parted: a message posted but
    not recorded would be posted again by the next adapter.
    """
    task = asyncio.ensure_future(step)
    _UNCANCELLED.add(task)  # the loop holds tasks weakly; shield alone does not keep this one
    task.add_done_callback(_UNCANCELLED.discard)
    return await asyncio.shield(task)
