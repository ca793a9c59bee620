"""An adapter's reply stream after a restart: its unacknowledged finals come once each, then new events."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from jobs import keys
from jobs.client import JobClient
from jobs.protocol import ReplyEvent, ReplyType


async def _next(deliveries, timeout_s: float = 30):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(anext(deliveries), timeout=timeout_s)


def test_pending_finals_come_once_each_then_new_events(redis_server, redis_client) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            first = JobClient(client, "restarting")
            await first.start_listening()
            stream = keys.reply_stream("restarting")
            for n in range(3):
                await client.xadd(stream, {"event": ReplyEvent(f"j{n}", ReplyType.FINAL, text=f"answer {n}").to_json()})
            reader = first.deliveries()
            read = [await _next(reader) for _ in range(3)]  # read, never shown: the adapter "dies" here
            assert [d.event.job_id for d in read] == ["j0", "j1", "j2"]
            await reader.aclose()

            second = JobClient(client, "restarting")  # the restarted adapter: same id, same consumer
            reader = second.deliveries()
            again = [await _next(reader) for _ in range(3)]
            assert [d.event.job_id for d in again] == ["j0", "j1", "j2"]  # each pending final once, in order
            for delivery in again:
                await second.shown(delivery)
            await client.xadd(stream, {"event": ReplyEvent("j3", ReplyType.FINAL, text="answer 3").to_json()})
            fresh = await _next(reader)
            assert fresh.event.job_id == "j3"  # past the pending list, new events are read
            await reader.aclose()
        finally:
            await client.aclose()

    asyncio.run(scenario())
