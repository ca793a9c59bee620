"""The adapter's side of the queue: submit jobs, receive reply events. Shared by every adapter."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from core.text_safety import normalise_question
from jobs import keys
from jobs.admission import Admission, AdmissionLimits, SubmitResult, admit
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # waits after consecutive Redis failures; last repeats
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
REMEMBERED_FINISHED_JOBS = 10_000  # recently answered job ids kept in memory, to drop their stray events
REPLY_BATCH = 100  # reply entries read per XREADGROUP


class JobClient:
    """Sends jobs to the workers and yields the replies addressed to this adapter instance.

    ``adapter_id`` names the reply stream; give each running adapter its own (e.g. ``slack-<host>``).
    Admission (duplicates, rate and queue limits) answers on the same reply stream, so an adapter
    only ever translates reply events.
    """

    def __init__(self, redis: aioredis.Redis, adapter_id: str, limits: AdmissionLimits | None = None,
                 job_deadline_s: float | None = None,
                 on_submitted: Callable[[Job, SubmitResult], None] | None = None):
        self.redis = redis
        self.adapter_id = adapter_id
        self.reply_stream = keys.reply_stream(adapter_id)
        self.limits = limits or AdmissionLimits()
        self.job_deadline_s = job_deadline_s
        # Told of every admission decision (the adapters' construction site passes the metric): jobs/
        # is the contract and imports no telemetry.
        self.on_submitted = on_submitted
        self._is_listening = False
        self._finished: OrderedDict[str, None] = OrderedDict()

    async def submit(self, job: Job, blob: bytes | None = None) -> SubmitResult:
        """Queue ``job`` (with the file bytes for an ingest) unless this event was already submitted or a
        limit says no. The user's answer to that, a queued position or a refusal, arrives as a reply event.
        """
        if job.kind is JobKind.ASK:
            question = normalise_question(job.text)
            if not question:
                return await self._refuse_empty(job)
            job = dataclasses.replace(job, text=question)
        if job.deadline_at is None and self.job_deadline_s:
            job = dataclasses.replace(job, deadline_at=time.time() + self.job_deadline_s)
        blob_key = keys.BLOB_PREFIX + job.id
        if blob is not None:
            job = dataclasses.replace(job, blob_key=blob_key)
            await self.redis.set(blob_key, blob, ex=keys.BLOB_TTL_S)
        result = await admit(self.redis, job, self.limits)
        self._submitted(job, result)
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

    def _submitted(self, job: Job, result: SubmitResult) -> None:
        if self.on_submitted is not None:
            self.on_submitted(job, result)

    async def _refuse_empty(self, job: Job) -> SubmitResult:
        """An empty question is not queued; its asker gets a hint, once even if the event comes again."""
        if not await self.redis.set(keys.JOB_SEEN_PREFIX + job.id, "1", nx=True, ex=keys.JOB_SEEN_TTL_S):
            return SubmitResult(Admission.DUPLICATE)
        result = SubmitResult(Admission.EMPTY_QUESTION)
        self._submitted(job, result)
        await self._tell(job, ReplyType.ERROR, result.message())
        return result

    async def _tell(self, job: Job, event_type: ReplyType, text: str, position: int | None = None) -> None:
        event = ReplyEvent(job_id=job.id, type=event_type, text=text, position=position, meta=job.meta)
        await self.redis.xadd(self.reply_stream, {"event": event.to_json()}, maxlen=keys.REPLY_STREAM_MAXLEN,
                              approximate=True)

    async def start_listening(self) -> None:
        """Create this adapter's consumer group on its reply stream (once), so no reply is missed.

        The group starts at the stream's end the first time; after that it keeps its place across
        restarts, so replies that arrived while the adapter was down are read when it comes back.
        """
        try:
            await self.redis.xgroup_create(self.reply_stream, keys.REPLY_GROUP, id="$", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._is_listening = True

    async def deliveries(self, block_ms: int = 1000) -> AsyncIterator[Delivery]:
        """Yield reply events for this adapter, forever, through its consumer group.

        First the events this adapter read before a restart but never acknowledged, then new ones.
        Non-terminal events are acknowledged as they are yielded (a restarted adapter only needs each
        job's end); a terminal one stays pending until :meth:`shown` says it reached the user, so an
        answer produced while the adapter was down, or lost in a crash while showing it, comes again.
        A job whose answer was already shown (its posted marker is set) yields nothing more.
        """
        failures = 0
        cursor = "0"  # our pending entries first, then ">" (never delivered to anyone)
        while True:
            # A cancel that a Redis call swallowed (see _raise_if_cancelling) must still end the loop:
            # otherwise the reader polls on and whoever awaits its task (an adapter's close()) hangs.
            _raise_if_cancelling()
            try:
                if not self._is_listening:
                    await self.start_listening()
                batches: Any = await self.redis.xreadgroup(
                    keys.REPLY_GROUP, self.adapter_id, {self.reply_stream: cursor},
                    block=None if cursor != ">" else block_ms, count=REPLY_BATCH)
                failures = 0
            except REDIS_DOWN as exc:
                _raise_if_cancelling()
                wait_s = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                failures += 1
                log.warning("reply stream read failed (%s); retrying in %.1f s", exc, wait_s)
                await asyncio.sleep(wait_s)
                continue
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._is_listening = False  # the stream was deleted: make the group again
                continue
            entries = [entry for _stream, stream_entries in batches or [] for entry in stream_entries]
            if cursor != ">" and not entries:
                cursor = ">"  # the pending list is read to its end: new entries from now on
                continue
            for entry_id, fields in entries:
                if cursor != ">":
                    cursor = _text(entry_id)  # page through the pending list, after the last entry seen
                delivery = await self._decode(_text(entry_id), fields)
                if delivery is not None:
                    yield delivery

    async def _decode(self, entry_id: str, fields: dict[Any, Any]) -> Delivery | None:
        fields = fields or {}  # an entry trimmed from the stream while still pending has no fields
        raw = fields.get(b"event") or fields.get("event") or ""
        try:
            event = ReplyEvent.from_json(raw)
        except (ValueError, KeyError, TypeError):
            await self._ack(entry_id)
            return None
        if event.job_id in self._finished or not event.is_terminal:
            await self._ack(entry_id)
            return None if event.job_id in self._finished else Delivery(entry_id, event)
        self._finished[event.job_id] = None
        if len(self._finished) > REMEMBERED_FINISHED_JOBS:
            self._finished.popitem(last=False)
        if await self._retrying(lambda: self.redis.exists(keys.POSTED_PREFIX + event.job_id)):
            await self._ack(entry_id)
            return None
        return Delivery(entry_id, event)

    async def shown(self, delivery: Delivery) -> None:
        """The user sees ``delivery``'s event: mark a terminal one posted, then acknowledge it."""
        if delivery.event.is_terminal:
            await self._retrying(lambda: self.redis.set(keys.POSTED_PREFIX + delivery.event.job_id, "1",
                                                        ex=keys.POSTED_TTL_S))
        await self._ack(delivery.entry_id)

    async def _ack(self, entry_id: str) -> None:
        await self._retrying(lambda: self.redis.xack(self.reply_stream, keys.REPLY_GROUP, entry_id))

    @staticmethod
    async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a small Redis call, waiting out a short outage; None if Redis stays away."""
        for attempt in range(len(RECONNECT_BACKOFF_S)):
            try:
                return await call()
            except REDIS_DOWN:
                _raise_if_cancelling()
                await asyncio.sleep(RECONNECT_BACKOFF_S[attempt])
        return None

    async def replies(self, block_ms: int = 1000) -> AsyncIterator[ReplyEvent]:
        """Yield reply events, each acknowledged at once: for callers that show an event as they get it."""
        async for delivery in self.deliveries(block_ms):
            await self.shown(delivery)
            yield delivery.event


@dataclass(frozen=True)
class Delivery:
    """One reply event as read from the consumer group; hand it back to :meth:`JobClient.shown`."""

    entry_id: str
    event: ReplyEvent


def _raise_if_cancelling() -> None:
    """Raise CancelledError if this task was cancelled and the cancel got lost on the way.

    redis-py turns a cancellation during connect into a ConnectionError, and on Python 3.11 the
    ``asyncio.wait_for`` it sends commands under returns normally when the cancel lands just as the
    send finishes. ``Task.cancelling()`` still counts the request, so the cancel can win here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
