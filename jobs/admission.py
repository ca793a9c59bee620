"""Whether a job enters the queue: one event makes one job, a per-user token bucket, queue-depth limits.

All checks and the XADD run in one Lua script, so two adapters admitting at once cannot overshoot a
limit. The depth counters it increments are decremented by the worker in the same script that
acknowledges the job (:mod:`workers.delivery`), so "jobs queued or running" stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

from core.text_safety import EMPTY_QUESTION_HINT
from jobs import keys
from jobs.protocol import Job

# KEYS: seen, bucket, depth, user queued, jobs stream
# ARGV: job json, seen ttl s, burst, tokens per ms, max depth, max per user, user ttl s, bucket ttl ms
ADMIT_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return {'duplicate', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[3])
local per_ms = tonumber(ARGV[4])
local tokens = burst
if burst > 0 then
  local b = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  if b[1] then tokens = math.min(burst, tonumber(b[1]) + (now - tonumber(b[2])) * per_ms) end
  if tokens < 1 then return {'rate_limited', math.ceil((1 - tokens) / per_ms)} end
end
local depth = tonumber(redis.call('GET', KEYS[3]) or '0')
if depth >= tonumber(ARGV[5]) then return {'queue_full', depth} end
local mine = tonumber(redis.call('GET', KEYS[4]) or '0')
if mine >= tonumber(ARGV[6]) then return {'user_queue_full', mine} end
if burst > 0 then
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'at', now)
  redis.call('PEXPIRE', KEYS[2], ARGV[8])
end
redis.call('XADD', KEYS[5], '*', 'job', ARGV[1])
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[7])
return {'queued', redis.call('INCR', KEYS[3])}
"""


class Admission(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # this event id was already submitted: no new job, no reply
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    USER_QUEUE_FULL = "user_queue_full"
    EMPTY_QUESTION = "empty_question"  # an ask with nothing left once normalised: answered with a hint


@dataclass(frozen=True)
class AdmissionLimits:
    """Limits on new jobs; the defaults limit nothing (the settings hold the deployed values)."""

    rate_burst: int = 0  # 0 turns the token bucket off
    rate_per_min: float = 0.0
    max_queue_depth: int = 1_000_000_000
    max_queued_per_user: int = 1_000_000_000


@dataclass(frozen=True)
class SubmitResult:
    status: Admission
    position: int | None = None  # queued: jobs ahead of it (queued or running), as in ReplyEvent.position
    retry_after_s: float | None = None  # rate limited: when the next question will be accepted

    def __bool__(self) -> bool:
        """True unless a duplicate: the job's replies (an answer, or a refusal) are on their way."""
        return self.status is not Admission.DUPLICATE

    @property
    def is_queued(self) -> bool:
        return self.status is Admission.QUEUED

    def message(self) -> str:
        """What the user is told, or "" when there is nothing to say."""
        if self.status is Admission.QUEUED:
            return "Working on it." if not self.position else f"You are #{self.position + 1} in the queue."
        if self.status is Admission.RATE_LIMITED:
            return (f"You are asking faster than this bot can answer; please wait "
                    f"{self.retry_after_s or 1:.0f} s and ask again.")
        if self.status is Admission.QUEUE_FULL:
            return "The bot is too busy right now (the queue is full); please ask again in a few minutes."
        if self.status is Admission.USER_QUEUE_FULL:
            return ("You already have questions waiting; this one was not queued. Ask again when they "
                    "are answered.")
        if self.status is Admission.EMPTY_QUESTION:
            return EMPTY_QUESTION_HINT
        return ""


async def admit(client: aioredis.Redis, job: Job, limits: AdmissionLimits) -> SubmitResult:
    """Queue ``job`` unless it is a duplicate or over a limit; one atomic step."""
    per_ms = limits.rate_per_min / 60_000
    burst = limits.rate_burst if per_ms > 0 else 0
    bucket_ttl_ms = int(burst / per_ms) + 1000 if burst else 1000
    status, value = await client.eval(
        ADMIT_LUA, 5,
        keys.JOB_SEEN_PREFIX + job.id, keys.RATE_PREFIX + job.sender_key, keys.QUEUE_DEPTH_KEY,
        keys.USER_QUEUED_PREFIX + job.sender_key, keys.JOBS_STREAM,
        job.to_json(), keys.JOB_SEEN_TTL_S, burst, repr(per_ms), limits.max_queue_depth,
        limits.max_queued_per_user, keys.USER_QUEUED_TTL_S, bucket_ttl_ms)
    admission = Admission(status.decode() if isinstance(status, bytes) else status)
    if admission is Admission.QUEUED:
        return SubmitResult(admission, position=int(value) - 1)  # the counter includes this job
    if admission is Admission.RATE_LIMITED:
        return SubmitResult(admission, retry_after_s=int(value) / 1000)
    return SubmitResult(admission)
