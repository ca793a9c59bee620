"""The reply pipeline every chat adapter shares: reply events in, one live reply per job, answers never lost.

:class:`ReplyRouter` reads the adapter's reply stream (its own consumer group, see
:meth:`jobs.client.JobClient.deliveries`) and hands each job's events, in order, to that job's
:class:`Reply`, one task per reply. The promise it keeps:

- intermediate events (queued, progress, deltas) are best effort: a reply that cannot show one (rate
  limited, a network blip) skips it, and a later update shows the text;
- the terminal event (the answer with its sources, or the error) is retried with backoff until the
  reply says it is shown; only then is the job recorded as posted and the event acknowledged. An
  adapter that dies first gets the event again when it restarts, and shows it then, exactly once;
- a job silent for ``reply_timeout_s`` (its worker is gone for good) gets the reply's give-up line:
  one timeout rule, the same on every platform.

Platforms supply the :class:`Reply` (how to post, edit, split and link) and a factory that rebuilds
one from an event's ``meta`` for jobs submitted before a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from bot.settings import REPLY_TIMEOUT_S
from jobs.client import Delivery, JobClient
from jobs.protocol import ReplyEvent, ReplyType

log = logging.getLogger(__name__)

FINAL_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # waits between attempts to show an answer; last repeats
UPLOAD_WAIT_S = 10 * 60  # a question sent with files waits this long for them to be indexed


class Reply(Protocol):
    """One job's (or one group of jobs') messages on a platform."""

    @property
    def is_done(self) -> bool:
        """True once nothing more is expected (every job it shows has ended)."""

    def interval_s(self) -> float:
        """How long to wait for an event before :meth:`flush` shows what is pending."""

    async def feed(self, event: ReplyEvent) -> None:
        """Take a non-terminal event; show it if an update is due. Best effort: may skip a failed update."""

    async def flush(self) -> None:
        """Show text that arrived since the last update (best effort)."""

    async def finish(self, event: ReplyEvent, attempt: int) -> None:
        """Show the terminal event; raise if it is not shown (the router tries again, ``attempt`` + 1)."""

    async def give_up(self) -> None:
        """No event came for the answer timeout: say so (best effort)."""


ReplyFactory = Callable[[ReplyEvent], Reply | None]


class ReplyRouter:
    """Routes reply events to per-job replies, concurrently; see the module docstring for the promise."""

    def __init__(self, jobs: JobClient, make_reply: ReplyFactory, *, reply_timeout_s: float = REPLY_TIMEOUT_S,
                 final_backoff_s: tuple[float, ...] = FINAL_BACKOFF_S):
        self.jobs = jobs
        self.make_reply = make_reply
        self.reply_timeout_s = reply_timeout_s
        self.final_backoff_s = final_backoff_s
        self._replies: dict[str, Reply] = {}  # by job id; several jobs may share one reply
        self._inboxes: dict[int, asyncio.Queue[Delivery]] = {}  # by id(reply)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: dict[str, asyncio.Event] = {}  # by job id, for those someone waits on
        self._held: set[int] = set()  # ids of replies whose events wait for release()

    def ended(self, job_id: str) -> asyncio.Event:
        """Set once ``job_id``'s terminal event has been shown (or given up on): e.g. an ingest a question waits for."""
        return self._ended.setdefault(job_id, asyncio.Event())

    async def wait_ended(self, job_ids: list[str], timeout_s: float) -> None:
        """Wait for every job in ``job_ids`` to end, or ``timeout_s``, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for job_id in job_ids:
                    await self.ended(job_id).wait()
        for job_id in job_ids:
            self._ended.pop(job_id, None)

    def is_pending(self, job_id: str) -> bool:
        """True while this process shows ``job_id``'s reply (or has shown its end and nobody waited on it yet):
        a second event about the same upload (e.g. a message command on a message whose PDF was already
        being indexed) can then wait for it instead of asking before it is indexed."""
        ended = self._ended.get(job_id)
        return job_id in self._replies or (ended is not None and ended.is_set())

    async def wait_for_uploads(self, job_ids: list[str]) -> None:
        """The one rule for a question sent with files: it waits until they are indexed (or failed), at
        most UPLOAD_WAIT_S. Call :meth:`ended` for each ingest before submitting it."""
        if job_ids:
            await self.wait_ended(job_ids, UPLOAD_WAIT_S)

    def expect(self, job_id: str, reply: Reply, hold: bool = False) -> bool:
        """Send ``job_id``'s events to ``reply``; call before submitting (replies can be quick).

        With ``hold``, events wait until :meth:`release` (the reply first has to post its placeholder).
        False when another reply already has this job (the same platform event delivered twice).
        """
        if job_id in self._replies:
            return False
        self._replies[job_id] = reply
        self._start(reply, run=not hold)
        return True

    def release(self, reply: Reply) -> None:
        """Start showing events to a reply expected with ``hold``."""
        inbox = self._inboxes.get(id(reply))
        if inbox is not None and id(reply) in self._held:
            self._held.discard(id(reply))
            self._spawn(self._follow(reply, inbox))

    def release_job(self, job_id: str) -> None:
        """:meth:`release` the reply expected for ``job_id``."""
        reply = self._replies.get(job_id)
        if reply is not None:
            self.release(reply)

    def forget(self, job_id: str) -> None:
        """Undo :meth:`expect` for a job that was not submitted after all."""
        reply = self._replies.pop(job_id, None)
        if reply is not None and not any(r is reply for r in self._replies.values()):
            self._held.discard(id(reply))
            inbox = self._inboxes.pop(id(reply), None)
            if inbox is not None:
                inbox.put_nowait(_STOP)

    async def run(self) -> None:
        """Route reply events until cancelled."""
        try:
            async for delivery in self.jobs.deliveries():
                self.dispatch(delivery)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def dispatch(self, delivery: Delivery) -> None:
        event = delivery.event
        reply = self._replies.get(event.job_id)
        if reply is None:
            reply = self.make_reply(event)
            if reply is None:
                log.warning("reply for job %s says nowhere to show it; dropped", event.job_id)
                self._spawn(self.jobs.shown(delivery))
                return
            self._replies[event.job_id] = reply
            self._start(reply)
        self._inboxes[id(reply)].put_nowait(delivery)

    def _start(self, reply: Reply, run: bool = True) -> None:
        if id(reply) in self._inboxes:
            return
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._inboxes[id(reply)] = inbox
        if run:
            self._spawn(self._follow(reply, inbox))
        else:
            self._held.add(id(reply))

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, reply: Reply, inbox: asyncio.Queue[Delivery]) -> None:
        silent_s = 0.0
        try:
            while not reply.is_done:
                if silent_s >= self.reply_timeout_s:
                    log.warning("no reply event for %.0f s; giving up on the job", silent_s)
                    await _best_effort(reply.give_up())
                    return
                interval_s = reply.interval_s()
                try:
                    # Not asyncio.wait_for: on Python 3.11 it drops a cancel that lands as get() returns.
                    async with asyncio.timeout(interval_s):
                        delivery = await inbox.get()
                except TimeoutError:
                    silent_s += interval_s
                    await _best_effort(reply.flush())
                    continue
                if delivery is _STOP:
                    return
                silent_s = 0.0
                if delivery.event.is_terminal:
                    await self._finish(reply, delivery)
                    if delivery.event.job_id in self._ended:
                        self._ended[delivery.event.job_id].set()
                else:
                    await _best_effort(reply.feed(delivery.event))
        finally:
            self._inboxes.pop(id(reply), None)
            for job_id in [j for j, r in self._replies.items() if r is reply]:
                del self._replies[job_id]
                if job_id in self._ended:
                    self._ended[job_id].set()

    async def _finish(self, reply: Reply, delivery: Delivery) -> None:
        """Show the terminal event, retrying with backoff until it is shown; then record it."""
        attempt = 1
        while True:
            try:
                await reply.finish(delivery.event, attempt)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait_s = self.final_backoff_s[min(attempt - 1, len(self.final_backoff_s) - 1)]
                log.warning("could not show the answer to job %s (attempt %d: %s); retrying in %.1f s",
                            delivery.event.job_id, attempt, exc, wait_s)
                attempt += 1
                await asyncio.sleep(wait_s)
        await self.jobs.shown(delivery)

    async def wait_idle(self) -> None:
        """Wait until every reply seen so far has been shown to its end (tests, shutdown)."""
        while self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*list(self._tasks))


async def _best_effort(step: object) -> None:
    try:
        await step  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("skipped a reply update: %s", exc)


_STOP = Delivery("", ReplyEvent(job_id="", type=ReplyType.ERROR))  # ends a reply nobody will feed
