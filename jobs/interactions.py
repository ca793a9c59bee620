"""The interaction log: one entry per answered question, and the ratings people give answers.

Both sides write it: a worker records each answer it posted (scope key, model, the sources it
retrieved with their scores, timings), an adapter records a 👍/👎 and the optional "what was wrong?"
line. It exists so that real misses become evaluation cases (:func:`export_rated`, in the question
format of ``bench/retrieval_quality.py``) and the share of good answers per model can be watched
(:func:`rating_stats`).

Privacy: question and answer text are stored only when the operator turns ``log_text`` on
(``PHOBOS_LOG_TEXT``); everything else carries no user text. Users are not stored at all: a rating is
kept per (job, rater) by a salted hash, only so that a second click replaces the first.
Bounded: entries older than the retention are trimmed by stream id (ids are milliseconds), and the
stream never holds more than ``max_entries``. Trimming is exact: each add removes at most the few
entries that just fell out, so its cost stays small and the bounds hold to the entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis
import redis.asyncio as aioredis

from jobs import keys

GOOD = "good"
BAD = "bad"
RATINGS = (GOOD, BAD)
READ_BATCH = 1000  # entries per XRANGE call while exporting


class EntryType(StrEnum):
    ANSWER = "answer"
    RATING = "rating"


@dataclass(frozen=True)
class Source:
    """A passage the answer was built from: file, pages and its retrieval score."""

    file_name: str
    pages: tuple[int, ...]
    score: float


@dataclass(frozen=True)
class AnsweredQuestion:
    """What a worker records when it has posted an answer."""

    job_id: str
    scope_key: str
    model: str
    sources: tuple[Source, ...]
    queue_wait_s: float
    first_token_s: float | None  # None: nothing streamed (an extractive or empty answer)
    answer_s: float
    grounded: bool
    question: str = ""  # stored only with log_text
    answer: str = ""  # stored only with log_text; the model's text, before the claim check
    support_share: float | None = None  # supported sentences / claims (core/claims.py); None: not checked
    unsupported: int | None = None  # sentences its sources did not support


@dataclass
class RatedAnswer:
    """An answer joined with its ratings, as export and stats read them."""

    answer: AnsweredQuestion
    answered_at_s: float
    ratings: dict[str, str] = field(default_factory=dict)  # rater hash -> good | bad
    reasons: list[str] = field(default_factory=list)

    @property
    def rating(self) -> str | None:
        """The majority rating; a tie counts as bad, since someone found it wrong."""
        if not self.ratings:
            return None
        good = sum(1 for r in self.ratings.values() if r == GOOD)
        return GOOD if good > len(self.ratings) - good else BAD


class InteractionLog:
    """Writes and reads the interaction stream (:data:`keys.INTERACTIONS_STREAM`)."""

    def __init__(self, client: redis.Redis, *, log_text: bool = False, retention_days: float = 90.0,
                 max_entries: int = 100_000):
        self.redis = client
        self.log_text = log_text
        self.retention_s = retention_days * 24 * 3600
        self.max_entries = max_entries

    def record_answer(self, answered: AnsweredQuestion) -> None:
        data: dict[str, Any] = {
            "scope": answered.scope_key, "model": answered.model, "grounded": answered.grounded,
            "sources": [{"file_name": s.file_name, "pages": list(s.pages), "score": round(s.score, 4)}
                        for s in answered.sources],
            "queue_wait_s": round(answered.queue_wait_s, 3), "answer_s": round(answered.answer_s, 3),
            "first_token_s": None if answered.first_token_s is None else round(answered.first_token_s, 3),
            "support_share": answered.support_share, "unsupported": answered.unsupported,
        }
        if self.log_text:
            data["question"] = answered.question
            data["answer"] = answered.answer
        self._add(EntryType.ANSWER, answered.job_id, data)

    def rate(self, job_id: str, rating: str, rater: str, reason: str = "") -> None:
        """Record a 👍/👎 (``rating`` is good or bad) and the optional line saying what was wrong."""
        self._add(EntryType.RATING, job_id, _rating_data(job_id, rating, rater, reason))

    def _add(self, entry_type: EntryType, job_id: str, data: dict[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        _bounded_add(pipe, entry_type, job_id, data, self.retention_s, self.max_entries)
        pipe.execute()

    def rated_answers(self) -> list[RatedAnswer]:
        """Every answer still in the log that someone rated, oldest first."""
        answers: dict[str, RatedAnswer] = {}
        ratings: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry_id, fields in self._entries():
            job_id = fields[b"job"].decode()
            data = json.loads(fields[b"data"])
            if fields[b"type"] == EntryType.ANSWER.value.encode():
                answers[job_id] = RatedAnswer(_answered(job_id, data), int(entry_id.split(b"-")[0]) / 1000)
            else:
                ratings[job_id].append(data)
        rated = []
        for job_id, answer in answers.items():
            for data in ratings.get(job_id, ()):
                answer.ratings[data["rater"]] = data["rating"]
                if data["reason"]:
                    answer.reasons.append(data["reason"])
            if answer.ratings:
                rated.append(answer)
        return rated

    def _entries(self) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        start = "-"
        while True:
            batch: Any = self.redis.xrange(keys.INTERACTIONS_STREAM, min=start, count=READ_BATCH)
            yield from batch
            if len(batch) < READ_BATCH:
                return
            start = "(" + batch[-1][0].decode()


class AsyncRatings:
    """The adapters' side of the log: ratings written through their asyncio Redis client.

    It trims with the same retention and cap as :class:`InteractionLog`, so a rating never trims the
    stream to tighter bounds than the operator set.
    """

    def __init__(self, client: aioredis.Redis, *, retention_days: float = 90.0, max_entries: int = 100_000):
        self.redis = client
        self.retention_s = retention_days * 24 * 3600
        self.max_entries = max_entries

    async def rate(self, job_id: str, rating: str, rater: str, reason: str = "") -> None:
        """Record a 👍/👎 (``rating`` is good or bad) and the optional line saying what was wrong."""
        pipe = self.redis.pipeline(transaction=False)
        _bounded_add(pipe, EntryType.RATING, job_id, _rating_data(job_id, rating, rater, reason),
                     self.retention_s, self.max_entries)
        await pipe.execute()


def _rating_data(job_id: str, rating: str, rater: str, reason: str) -> dict[str, Any]:
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {RATINGS}, not {rating!r}")
    return {"rating": rating, "rater": _rater_hash(job_id, rater), "reason": reason.strip()[:500]}


def _bounded_add(pipe: Any, entry_type: EntryType, job_id: str, data: dict[str, Any], retention_s: float,
                 max_entries: int) -> None:
    """Queue the add and the trims on ``pipe`` (a sync or asyncio pipeline; the caller executes it)."""
    cutoff_ms = int((time.time() - retention_s) * 1000)
    pipe.xadd(keys.INTERACTIONS_STREAM, {"type": entry_type.value, "job": job_id, "data": json.dumps(data)},
              maxlen=max_entries, approximate=False)
    pipe.xtrim(keys.INTERACTIONS_STREAM, minid=f"{max(cutoff_ms, 0)}-0", approximate=False)


def export_rated(rated: list[RatedAnswer]) -> tuple[list[dict[str, Any]], int]:
    """Rated answers as question-file lines; returns them and how many were left out for want of text.

    ``doc`` and ``pages`` are the top source's: for a 👎 answer they are what retrieval found, which
    whoever turns the line into an eval case checks and corrects.
    """
    lines, without_text = [], 0
    for item in rated:
        answered = item.answer
        if not answered.question:
            without_text += 1
            continue
        top = answered.sources[0] if answered.sources else None
        lines.append({
            "id": answered.job_id, "question": answered.question,
            "doc": top.file_name if top else "", "pages": list(top.pages) if top else [],
            "answer": answered.answer, "evidence": "", "kind": "feedback",
            "rating": item.rating, "reasons": item.reasons, "model": answered.model,
            "scope": answered.scope_key,
            "sources": [{"file_name": s.file_name, "pages": list(s.pages), "score": s.score}
                        for s in answered.sources],
        })
    return lines, without_text


def rating_stats(rated: list[RatedAnswer]) -> list[dict[str, Any]]:
    """The share of good ratings per model and ISO week (``2026-W48``), newest week first."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for item in rated:
        year, week, _ = dt.datetime.fromtimestamp(item.answered_at_s, dt.UTC).isocalendar()
        counts[(f"{year}-W{week:02d}", item.answer.model)][0 if item.rating == GOOD else 1] += 1
    # Newest week first; models by name within a week.
    ordered = sorted(counts.items(), key=lambda kv: kv[0][1])
    ordered.sort(key=lambda kv: kv[0][0], reverse=True)
    return [{"week": week, "model": model, "good": good, "bad": bad, "good_share": round(good / (good + bad), 3)}
            for (week, model), (good, bad) in ordered]


def _answered(job_id: str, data: dict[str, Any]) -> AnsweredQuestion:
    return AnsweredQuestion(
        job_id=job_id, scope_key=data["scope"], model=data["model"], grounded=data["grounded"],
        sources=tuple(Source(s["file_name"], tuple(s["pages"]), s["score"]) for s in data["sources"]),
        queue_wait_s=data["queue_wait_s"], first_token_s=data["first_token_s"], answer_s=data["answer_s"],
        question=data.get("question", ""), answer=data.get("answer", ""),
        support_share=data.get("support_share"), unsupported=data.get("unsupported"))


def _rater_hash(job_id: str, rater: str) -> str:
    # Salted by the job, so the same person is not linkable across answers in the log.
    return hashlib.sha256(f"{job_id}\0{rater}".encode()).hexdigest()[:16]
