"""Publishing a job's reply events to the asking adapter's stream, only through the queue's fenced writes.

Every event goes through :class:`workers.delivery.JobQueue`: partial events (deltas, progress) through
``post``, the terminal one (final or error) through ``finish``, which posts it in the same atomic step
that acknowledges the job. Both check the entry's fencing token first, so a worker whose lease was lost
(the job was taken over, or a second process took it under the same worker id) cannot publish: a job
has one answer however often it runs. The publisher holds no Redis client of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.documents import Citation
from jobs.protocol import ClaimSupport, Job, ReplyEvent, ReplyType
from telemetry.metrics import JobMetrics
from workers.delivery import Delivery, JobQueue

log = logging.getLogger(__name__)

DELTA_FLUSH_INTERVAL_S = 0.1  # coalesce tokens: ~10 events/s is plenty for chat edits at 1/s


class ReplyPublisher:
    """Sends one job's events in order (``seq``), batching text deltas, under the delivery's fence.

    ``on_lost`` is called once when a write is refused because another take holds the job now (the
    worker stops the job's work); after a refusal nothing more is sent. ``is_handing_back`` says the
    job goes back to the queue instead of finishing: its terminal event is then not sent.
    """

    def __init__(self, queue: JobQueue, delivery: Delivery, job: Job, on_lost: Callable[[], None] | None = None,
                 is_handing_back: Callable[[], bool] | None = None):
        self.observed = JobMetrics(job, delivery.entry_id)  # timings and outcome, for metrics and the log line
        self._outcome = "ok"
        self.queue = queue
        self.delivery = delivery
        self.job = job
        self.attempt = delivery.times_delivered
        self.on_lost = on_lost
        self.is_handing_back = is_handing_back or (lambda: False)
        self.is_finished = False
        self.is_superseded = False  # a write was refused: another worker holds the job now
        self._seq = 0
        self._pending_text = ""
        self._last_flush = time.monotonic()

    def _send(self, event_type: ReplyType, **fields: object) -> bool:
        self._seq += 1
        event = ReplyEvent(job_id=self.job.id, type=event_type, seq=self._seq, meta=self.job.meta,
                           attempt=self.attempt, **fields)  # type: ignore[arg-type]
        if event.is_terminal:
            self.is_finished = True
            return self._finish(event)
        if self.is_superseded:
            return False
        if self.queue.post(self.delivery, self.job.reply_to, event.to_json()):
            return True
        log.warning("job %s was taken over by another worker; stopping its work here", self.job.id)
        self._lost()
        return False

    def _finish(self, event: ReplyEvent) -> bool:
        if self.is_handing_back():
            return False  # the job goes back to the queue instead; hand_back follows
        is_posted = self.queue.finish(self.delivery, self.job.sender_key, self.job.reply_to, event.to_json())
        if is_posted:
            self.observed.finished(self._outcome, event.text)
        else:
            log.warning("job %s was taken over by another worker; its result here is discarded", self.job.id)
            self._lost()
        return is_posted

    def _lost(self) -> None:
        if not self.is_superseded and self.on_lost is not None:
            self.on_lost()
        self.is_superseded = True

    def delta(self, text: str) -> None:
        self.observed.delta()
        self._pending_text += text
        if time.monotonic() - self._last_flush >= DELTA_FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self._pending_text:
            self._send(ReplyType.DELTA, text=self._pending_text)
            self._pending_text = ""
        self._last_flush = time.monotonic()

    def progress(self, done: int, total: int, text: str) -> None:
        self._send(ReplyType.PROGRESS, done=done, total=total, text=text)

    def final(self, text: str, citations: tuple[Citation, ...] = (), claims: ClaimSupport | None = None) -> bool:
        """Send the answer (with what its claim check found); False when it was not posted (another
        worker had taken the job over, or the job is being handed back)."""
        self.flush()
        return self._send(ReplyType.FINAL, text=text, citations=citations, claims=claims)

    def error(self, text: str, outcome: str = "error") -> None:
        """Send an error reply; ``outcome`` labels it in metrics (error, failed, expired, timeout)."""
        self.flush()
        self._outcome = outcome
        self._send(ReplyType.ERROR, text=text)
