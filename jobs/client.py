"""The adapter's side of the queue: submit jobs, receive reply events. Shared by every adapter."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from jobs import keys
from jobs.admission import AdmissionLimits, SubmitResult, admit
from jobs.protocol import Job, ReplyEvent, ReplyType
from telemetry import metrics

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # waits after consecutive Redis failures; last repeats
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
REMEMBERED_FINISHED_JOBS = 10_000  # recently answered job ids kept in memory, to drop their stray events


class JobClient:
    """Sends jobs to the workers and yields the replies addressed to this adapter instance.

    ``adapter_id`` names the reply stream; give each running adapter its own (e.g. ``slack-<host>``).
    Admission (duplicates, rate and queue limits) answers on the same reply stream, so an adapter
    only ever translates reply events.
    """

    def __init__(self, redis: aioredis.Redis, adapter_id: str, limits: AdmissionLimits | None = None,
                 job_deadline_s: float | None = None):
        self.redis = redis
        self.adapter_id = adapter_id
        self.reply_stream = keys.reply_stream(adapter_id)
        self.limits = limits or AdmissionLimits()
        self.job_deadline_s = job_deadline_s
        self._last_reply_id: bytes | str = "$"
        self._finished: OrderedDict[str, None] = OrderedDict()

    async def submit(self, job: Job, blob: bytes | None = None) -> SubmitResult:
        """Queue ``job`` (with the file bytes for an ingest) unless this event was already submitted or a
        limit says no. The user's answer to that, a queued position or a refusal, arrives as a reply event.
        """
        if job.deadline_at is None and self.job_deadline_s:
            job = dataclasses.replace(job, deadline_at=time.time() + self.job_deadline_s)
        blob_key = keys.BLOB_PREFIX + job.id
        if blob is not None:
            job = dataclasses.replace(job, blob_key=blob_key)
            await self.redis.set(blob_key, blob, ex=keys.BLOB_TTL_S)
        result = await admit(self.redis, job, self.limits)
        metrics.submitted(job.kind, result.status)
        if result.is_queued:
            await self._tell(job, ReplyType.QUEUED, result.message(), position=result.position)
        elif result.message():
            log.info("job %s refused: %s", job.id, result.status)
            await self._tell(job, ReplyType.ERROR, result.message())
        else:
            log.info("job %s already submitted; ignoring the redelivered event", job.id)
        if blob is not None and not result.is_queued and result.status != "duplicate":
            await self.redis.delete(blob_key)
        return result

    async def _tell(self, job: Job, event_type: ReplyType, text: str, position: int | None = None) -> None:
        event = ReplyEvent(job_id=job.id, type=event_type, text=text, position=position, meta=job.meta)
        await self.redis.xadd(self.reply_stream, {"event": event.to_json()}, maxlen=keys.REPLY_STREAM_MAXLEN,
                              approximate=True)

    async def start_listening(self) -> None:
        """Remember the reply stream's current end, so replies to jobs submitted after this are seen."""
        last = await self.redis.xrevrange(self.reply_stream, count=1)
        self._last_reply_id = (last[0][0] or "0-0") if last else "0-0"

    async def replies(self, block_ms: int = 1000) -> AsyncIterator[ReplyEvent]:
        """Yield reply events for this adapter, forever. Call :meth:`start_listening` before submitting.

        Each job's terminal event is yielded once, even across adapter restarts (a marker in Redis
        records it), and nothing of a job is yielded after it; Redis outages are waited out.
        """
        failures = 0
        while True:
            try:
                if self._last_reply_id == "$":
                    await self.start_listening()
                batches: Any = await self.redis.xread({self.reply_stream: self._last_reply_id}, block=block_ms)
                failures = 0
            except REDIS_DOWN as exc:
                wait_s = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                failures += 1
                log.warning("reply stream read failed (%s); retrying in %.1f s", exc, wait_s)
                await asyncio.sleep(wait_s)
                continue
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    self._last_reply_id = entry_id
                    raw = fields.get(b"event") or fields.get("event")
                    try:
                        event = ReplyEvent.from_json(raw)
                    except (ValueError, KeyError, TypeError):
                        continue
                    if await self._is_new(event):
                        yield event

    async def _is_new(self, event: ReplyEvent) -> bool:
        if event.job_id in self._finished:
            return False
        if not event.is_terminal:
            return True
        self._finished[event.job_id] = None
        if len(self._finished) > REMEMBERED_FINISHED_JOBS:
            self._finished.popitem(last=False)
        for attempt in range(len(RECONNECT_BACKOFF_S)):
            try:
                return bool(await self.redis.set(keys.POSTED_PREFIX + event.job_id, "1", nx=True,
                                                 ex=keys.POSTED_TTL_S))
            except REDIS_DOWN:
                await asyncio.sleep(RECONNECT_BACKOFF_S[attempt])
        return True  # Redis stays away: posting twice is better than never


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
