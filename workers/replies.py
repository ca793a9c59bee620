"""Publishing a job's reply events to the asking adapter's stream."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from core.documents import Citation
from jobs import keys
from jobs.protocol import ClaimSupport, Job, ReplyEvent, ReplyType
from telemetry.metrics import JobMetrics

DELTA_FLUSH_INTERVAL_S = 0.1  # coalesce tokens: ~10 events/s is plenty for chat edits at 1/s


class ReplyPublisher:
    """Sends one job's events in order (``seq``), batching text deltas.

    The terminal event (final or error) goes through ``finish`` when given: the worker posts it in
    the same atomic step that acknowledges the job, so a job has one answer however often it runs.
    Partial events (deltas, progress) go through ``post`` when given, which refuses them once the job
    was taken over; after a refusal nothing more is sent.
    """

    def __init__(self, client: redis.Redis, job: Job, attempt: int = 1,
                 finish: Callable[[ReplyEvent], bool] | None = None,
                 post: Callable[[ReplyEvent], bool] | None = None, entry_id: str | None = None):
        self.observed = JobMetrics(job, entry_id)  # timings and outcome, for metrics and the job's log line
        self._outcome = "ok"
        self.redis = client
        self.job = job
        self.attempt = attempt
        self.finish = finish
        self.post = post
        self.is_finished = False
        self.is_superseded = False  # a partial event was refused: another worker holds the job now
        self._seq = 0
        self._pending_text = ""
        self._last_flush = time.monotonic()

    def _send(self, event_type: ReplyType, **fields: object) -> bool:
        self._seq += 1
        event = ReplyEvent(job_id=self.job.id, type=event_type, seq=self._seq, meta=self.job.meta,
                           attempt=self.attempt, **fields)  # type: ignore[arg-type]
        if event.is_terminal:
            self.is_finished = True
            if self.finish is not None:
                is_posted = self.finish(event)
                if is_posted:
                    self.observed.finished(self._outcome, event.text)
                return is_posted
        if self.is_superseded:
            return False
        if self.post is not None:
            self.is_superseded = not self.post(event)
            return not self.is_superseded
        self.redis.xadd(self.job.reply_to, {"event": event.to_json()}, maxlen=keys.REPLY_STREAM_MAXLEN,
                        approximate=True)
        if event.is_terminal:
            self.observed.finished(self._outcome, event.text)
        return True

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
        worker had taken the job over)."""
        self.flush()
        return self._send(ReplyType.FINAL, text=text, citations=citations, claims=claims)

    def error(self, text: str, outcome: str = "error") -> None:
        """Send an error reply; ``outcome`` labels it in metrics (error, failed, expired, timeout)."""
        self.flush()
        self._outcome = outcome
        self._send(ReplyType.ERROR, text=text)
