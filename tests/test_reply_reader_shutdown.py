"""An adapter's reply reader stops when cancelled, even when a Redis call swallows the cancel.

On Python 3.11 redis-py sends each command under ``asyncio.wait_for`` (its socket timeout), which
returns normally when the cancel lands just as the send completes; under load that window is wide.
The reader then polled on, and an adapter's ``close()``, which awaits it, hung the test run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.pipeline import ReplyRouter
from jobs.client import JobClient
from tests.conftest import RedisServer

STOP_DEADLINE_S = 30.0  # generous: the reader needs one blocking read (1 s) at most to stop


class CancelLosingRedis(aioredis.Redis):
    """The real client, watched: :attr:`lost_cancels` counts blocking XREADGROUPs that returned normally
    although their task had been cancelled. Where redis-py does not lose a cancel that lands inside
    the read (other Python versions), this client swallows the first one, so the outcome is certain."""

    reading: asyncio.Event  # set when a blocking XREADGROUP is under way
    lost_cancels = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] != "XREADGROUP" or b"BLOCK" not in args:
            return await super().execute_command(*args, **options)
        self.reading.set()
        try:
            result = await super().execute_command(*args, **options)
        except asyncio.CancelledError:
            if self.lost_cancels:
                raise  # lose only the first one
            result = None  # as if the block had timed out
        finally:
            self.reading.clear()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            self.lost_cancels += 1
        return result


def test_router_stops_when_a_redis_call_swallows_its_cancel(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        client = CancelLosingRedis.from_url(redis_server.url)
        client.reading = asyncio.Event()
        try:
            jobs = JobClient(client, "swallowed-cancel")
            await jobs.start_listening()
            router = ReplyRouter(jobs, lambda event: None)
            task = asyncio.create_task(router.run())
            await asyncio.wait_for(client.reading.wait(), timeout=STOP_DEADLINE_S)
            task.cancel()  # lands inside the blocking read, which swallows it
            done, _ = await asyncio.wait({task}, timeout=STOP_DEADLINE_S)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_DEADLINE_S)
                pytest.fail(f"the reply reader ignored its cancel for {STOP_DEADLINE_S:.0f} s")
            assert task.cancelled()
            assert client.lost_cancels == 1, "the cancel was lost inside the read, as under load"
        finally:
            await client.aclose()

    asyncio.run(scenario())
