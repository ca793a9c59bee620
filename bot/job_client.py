"""The adapter's side of the queue: submit jobs, receive reply events. Shared by every adapter."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from workers import keys
from workers.protocol import Job, ReplyEvent

log = logging.getLogger(__name__)


class JobClient:
    """Sends jobs to the workers and yields the replies addressed to this adapter instance.

    ``adapter_id`` names the reply stream; give each running adapter its own (e.g. ``slack-<host>``).
    """

    def __init__(self, redis: aioredis.Redis, adapter_id: str):
        self.redis = redis
        self.adapter_id = adapter_id
        self.reply_stream = keys.reply_stream(adapter_id)
        self._last_reply_id: bytes | str = "$"

    async def submit(self, job: Job, blob: bytes | None = None) -> bool:
        """Queue ``job`` (with the file bytes for an ingest). False when this job id was already submitted."""
        is_new = await self.redis.set(keys.JOB_SEEN_PREFIX + job.id, "1", nx=True, ex=keys.JOB_SEEN_TTL_S)
        if not is_new:
            log.info("job %s already submitted; ignoring the redelivered event", job.id)
            return False
        if blob is not None:
            blob_key = keys.BLOB_PREFIX + job.id
            job = dataclasses.replace(job, blob_key=blob_key)
            await self.redis.set(blob_key, blob, ex=keys.BLOB_TTL_S)
        await self.redis.xadd(keys.JOBS_STREAM, {"job": job.to_json()})
        return True

    async def start_listening(self) -> None:
        """Remember the reply stream's current end, so replies to jobs submitted after this are seen."""
        last = await self.redis.xrevrange(self.reply_stream, count=1)
        self._last_reply_id = (last[0][0] or "0-0") if last else "0-0"

    async def replies(self, block_ms: int = 1000) -> AsyncIterator[ReplyEvent]:
        """Yield reply events for this adapter, forever. Call :meth:`start_listening` before submitting."""
        if self._last_reply_id == "$":
            await self.start_listening()
        while True:
            try:
                batches: Any = await self.redis.xread({self.reply_stream: self._last_reply_id}, block=block_ms)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                log.warning("reply stream read failed (%s); retrying", exc)
                await asyncio.sleep(1)
                continue
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    self._last_reply_id = entry_id
                    raw = fields.get(b"event") or fields.get("event")
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        yield ReplyEvent.from_json(raw)


async def run_job(client: JobClient, job: Job, blob: bytes | None = None,
                  on_event: Callable[[ReplyEvent], Awaitable[None] | None] | None = None,
                  timeout_s: float = 600.0) -> ReplyEvent:
    """Submit ``job`` and wait for its final or error event, passing every event to ``on_event``.

    For adapters that handle one job at a time (the console, the CLI); chat adapters instead route
    :meth:`JobClient.replies` to many jobs at once.
    """
    await client.start_listening()
    if not await client.submit(job, blob):
        raise DuplicateJobError(job.id)
    async with asyncio.timeout(timeout_s):
        async for event in client.replies():
            if event.job_id != job.id:
                continue
            if on_event is not None:
                result = on_event(event)
                if asyncio.iscoroutine(result):
                    await result
            if event.is_terminal:
                return event
    raise AssertionError("unreachable: replies() never ends")


class DuplicateJobError(RuntimeError):
    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} was already submitted")
