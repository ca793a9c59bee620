"""Every Prometheus metric Phobos exports, defined once, and the few calls that record them.

Labels carry kinds, outcomes, model names, stream names and platforms only: never a user id, a
scope or any text, so a metric's cardinality stays bounded by the deployment, not by its users.
Queue depth, lag and live workers are read from Redis when scraped (:class:`RedisCollector`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobs import queue_state
from telemetry import logs

log = logging.getLogger("phobos.jobs")

WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
FIRST_TOKEN_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
ANSWER_BUCKETS_S = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
INGEST_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# --- workers ---
JOBS = Counter("phobos_jobs", "Jobs a worker finished, by kind and outcome "
               "(ok, error, failed, expired, timeout, dead_letter)", ["kind", "outcome"])
QUEUE_WAIT = Histogram("phobos_job_queue_wait_seconds", "From a job entering its stream to a worker starting it",
                       ["kind"], buckets=WAIT_BUCKETS_S)
FIRST_TOKEN = Histogram("phobos_time_to_first_token_seconds", "From a worker starting a question to its first "
                        "answer token", ["model"], buckets=FIRST_TOKEN_BUCKETS_S)
ANSWER = Histogram("phobos_answer_seconds", "From a worker starting a question to its posted answer", ["model"],
                   buckets=ANSWER_BUCKETS_S)
TOKENS = Counter("phobos_generated_tokens", "Answer tokens streamed by the generators (one per streamed piece)",
                 ["model"])
INGEST_PAGES = Counter("phobos_ingest_pages", "PDF pages indexed (files already indexed count none)")
INGEST_SECONDS = Histogram("phobos_ingest_seconds", "Wall time of one successful ingest job",
                           buckets=INGEST_BUCKETS_S)
SUPPORT_SHARE = Histogram("phobos_answer_support_share", "Share of an answer's claims its cited sources support "
                          "(the claim check, core/claims.py)", ["model"],
                          buckets=(0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0))
CLAIM_SENTENCES = Counter("phobos_claim_sentences", "Answer sentences the claim check judged, by verdict "
                          "(supported, unsupported)", ["model", "verdict"])
CLAIM_CHECK = Histogram("phobos_claim_check_seconds", "Time the claim check added to an answer", ["model"],
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
DEAD_LETTERS = Counter("phobos_dead_letters", "Jobs moved to the dead-letter stream after too many deliveries")

# --- adapters ---
SUBMITTED = Counter("phobos_jobs_submitted", "Jobs an adapter offered to the queue, by kind and admission result "
                    "(queued, duplicate, rate_limited, queue_full, user_queue_full, empty_question)",
                    ["kind", "result"])
PLATFORM_ERRORS = Counter("phobos_platform_api_errors", "Chat platform API calls that failed, by HTTP status",
                          ["platform", "status"])
PLATFORM_RATE_LIMITED = Counter("phobos_platform_rate_limited", "Chat platform API calls answered 429",
                                ["platform"])
RATINGS = Counter("phobos_answer_ratings", "👍/👎 ratings people gave answers, by platform and rating",
                  ["platform", "rating"])


class JobLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> Any: ...  # a JobKind (a StrEnum)

    @property
    def text(self) -> str: ...

    @property
    def scope(self) -> Any: ...  # a Scope, with .key


def entry_age_s(entry_id: str | None, now_s: float) -> float | None:
    """Seconds since a stream entry was added: its id starts with Redis' clock in milliseconds."""
    if not entry_id:
        return None
    millis, _, _ = entry_id.partition("-")
    try:
        return max(0.0, now_s - int(millis) / 1000)
    except ValueError:
        return None


class JobMetrics:
    """One job's timings on a worker: queue wait at start, first token, and the outcome at its end.

    The end also writes the job's one structured log line (ids, scope, model, timings; text only when
    PHOBOS_LOG_TEXT is on).
    """

    def __init__(self, job: JobLike, entry_id: str | None = None):
        self.job = job
        self.kind = str(job.kind)
        self.model = ""  # set once the question's model is resolved
        self.started = time.monotonic()
        self.first_token_s: float | None = None
        self.tokens = 0
        self.support_share: float | None = None  # set when the answer's claims were checked
        self.queue_wait_s = entry_age_s(entry_id, time.time())
        if self.queue_wait_s is not None:
            QUEUE_WAIT.labels(kind=self.kind).observe(self.queue_wait_s)

    def delta(self) -> None:
        """One streamed piece of answer text."""
        self.tokens += 1
        TOKENS.labels(model=self.model or "unknown").inc()
        if self.first_token_s is None:
            self.first_token_s = time.monotonic() - self.started
            FIRST_TOKEN.labels(model=self.model or "unknown").observe(self.first_token_s)

    def claims_checked(self, support_share: float, claims: int, unsupported: int, check_s: float) -> None:
        """The answer's claim check ran: its support share, verdicts and cost."""
        model = self.model or "unknown"
        self.support_share = support_share
        SUPPORT_SHARE.labels(model=model).observe(support_share)
        CLAIM_SENTENCES.labels(model=model, verdict="supported").inc(claims - unsupported)
        CLAIM_SENTENCES.labels(model=model, verdict="unsupported").inc(unsupported)
        CLAIM_CHECK.labels(model=model).observe(check_s)

    def elapsed_s(self) -> float:
        """Seconds since the job started on this worker."""
        return time.monotonic() - self.started

    def finished(self, outcome: str, answer: str = "") -> None:
        """The job's terminal event was posted."""
        duration_s = time.monotonic() - self.started
        JOBS.labels(kind=self.kind, outcome=outcome).inc()
        if outcome == "ok" and self.kind == "ask":
            ANSWER.labels(model=self.model or "unknown").observe(duration_s)
        if outcome == "ok" and self.kind == "ingest":
            INGEST_SECONDS.observe(duration_s)
        fields: dict[str, object] = {
            "job_id": self.job.id, "kind": self.kind, "scope": self.job.scope.key, "outcome": outcome,
            "duration_s": round(duration_s, 4), "queue_wait_s": _rounded(self.queue_wait_s)}
        if self.kind == "ask":
            fields.update(model=self.model, first_token_s=_rounded(self.first_token_s), tokens=self.tokens,
                          support_share=self.support_share)
        if logs.include_text():
            fields.update(question=self.job.text, answer=answer)
        log.info("job %s %s %s in %.2f s", self.job.id, self.kind, outcome, duration_s, extra=fields)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def dead_lettered(kind: object) -> None:
    DEAD_LETTERS.inc()
    JOBS.labels(kind=str(kind), outcome="dead_letter").inc()


def submitted(kind: object, result: object) -> None:
    SUBMITTED.labels(kind=str(kind), result=str(result)).inc()


def job_submitted(job: Any, result: Any) -> None:
    """``JobClient``'s ``on_submitted``: counts an admission decision by job kind and result."""
    submitted(job.kind, result.status)


def platform_error(platform: str, exc: BaseException) -> None:
    """A failed platform API call: counts its HTTP status (429s also on their own)."""
    status = _http_status(exc)
    PLATFORM_ERRORS.labels(platform=platform, status=str(status or "none")).inc()
    if status == 429:
        PLATFORM_RATE_LIMITED.labels(platform=platform).inc()


def feedback_rating(platform: str, rating: str) -> None:
    """A 👍/👎 click (no user in the labels: who rated is the interaction log's, hashed)."""
    RATINGS.labels(platform=platform, rating=rating).inc()


def platform_rate_limited(platform: str) -> None:
    """A 429 that the platform SDK waited out and retried itself (it never surfaces as an error)."""
    PLATFORM_ERRORS.labels(platform=platform, status="429").inc()
    PLATFORM_RATE_LIMITED.labels(platform=platform).inc()


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)  # discord.HTTPException, aiohttp.ClientResponseError
    if status is None:
        response = getattr(exc, "response", None)  # slack_sdk's SlackApiError
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


class RedisCollector(Collector):
    """Queue gauges read from Redis at scrape time, so every process reports the same truth."""

    def __init__(self, client: redis.Redis):
        self.redis = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            state = queue_state.read(self.redis)
        except (redis.RedisError, OSError):
            return  # Redis away: /readyz says so; no stale numbers here
        yield GaugeMetricFamily("phobos_queue_depth", "Jobs no worker has taken yet (group lag over every job "
                                "stream; jobs/queue_state.py)", value=state.depth)
        yield GaugeMetricFamily("phobos_queue_pending", "Jobs taken by a worker and not yet finished",
                                value=state.pending)
        yield GaugeMetricFamily("phobos_queue_admitted", "Jobs queued or running (the admission counter)",
                                value=state.admitted)
        lag = GaugeMetricFamily("phobos_stream_lag", "Entries not yet delivered to the worker group",
                                labels=["stream"])
        pending = GaugeMetricFamily("phobos_stream_pending", "Entries delivered to a worker and not yet finished",
                                    labels=["stream"])
        for stream in state.streams:
            lag.add_metric([stream.name], stream.lag)
            pending.add_metric([stream.name], stream.pending)
        yield lag
        yield pending
        yield GaugeMetricFamily("phobos_workers_live", "Workers whose heartbeat has not expired",
                                value=state.workers)
        yield GaugeMetricFamily("phobos_dead_letter_stream_length", "Jobs waiting in the dead-letter stream",
                                value=state.dead)
