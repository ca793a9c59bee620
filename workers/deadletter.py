"""The dead-letter stream: jobs that failed too many deliveries, with what `phobos dlq` does to them."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from jobs import keys
from jobs.protocol import Job, ReplyEvent, ReplyType

RETRY_SUFFIX = "#retry-"  # a retried job gets a new id, so the adapter posts its answer afresh
# Job.meta entries that grant posting rights (Slack's response_url: 30 minutes, five posts). The failure
# event still carries them to the user; the dead-letter record, kept for days, does not.
POSTING_RIGHTS_META = ("response_url",)


@dataclass(frozen=True)
class DeadJob:
    dead_id: str  # the entry id on the dead-letter stream
    job_json: str
    entry_id: str  # the job's entry id on the jobs stream when it died
    deliveries: int
    reason: str
    died_at: float

    def job(self) -> Job | None:
        try:
            return Job.from_json(self.job_json)
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps({"job": self.job_json, "entry_id": self.entry_id, "deliveries": self.deliveries,
                           "reason": self.reason, "died_at": self.died_at})

    @classmethod
    def from_entry(cls, dead_id: bytes | str, fields: dict[bytes, bytes]) -> DeadJob:
        data = json.loads(fields[b"dead"])
        return cls(dead_id.decode() if isinstance(dead_id, bytes) else dead_id, data["job"], data["entry_id"],
                   int(data["deliveries"]), data["reason"], float(data["died_at"]))


def failure_event(job: Job, deliveries: int, seq: int = 1) -> ReplyEvent:
    """The error the user sees when their job is dead-lettered."""
    return ReplyEvent(job_id=job.id, type=ReplyType.ERROR, seq=seq, meta=job.meta, attempt=deliveries,
                      text=(f"Sorry, this failed: the worker stopped while working on it {deliveries - 1} "
                            f"times, so it was set aside for an operator (job id {job.id})."))


def dead_record(job_json: str, entry_id: str, deliveries: int, reason: str) -> str:
    """The dead-letter entry for a job, without the posting rights its meta may carry."""
    return DeadJob("", _without_posting_rights(job_json), entry_id, deliveries, reason, time.time()).to_json()


def _without_posting_rights(job_json: str) -> str:
    try:
        data = json.loads(job_json)
        meta = data.get("meta")
    except (ValueError, AttributeError):
        return job_json  # unreadable: kept as it came, for an operator to look at
    if not isinstance(meta, dict) or not any(name in meta for name in POSTING_RIGHTS_META):
        return job_json
    data["meta"] = {k: v for k, v in meta.items() if k not in POSTING_RIGHTS_META}
    return json.dumps(data)


def list_dead(client: redis.Redis, count: int = 100) -> list[DeadJob]:
    entries: Any = client.xrange(keys.DEAD_STREAM, count=count)
    return [DeadJob.from_entry(i, f) for i, f in entries]


def retry(client: redis.Redis, dead_id: str) -> str | None:
    """Queue a dead job again under a new id (no rate limit); returns that id, None if not found."""
    entries: Any = client.xrange(keys.DEAD_STREAM, min=dead_id, max=dead_id)
    if not entries:
        return None
    dead = DeadJob.from_entry(*entries[0])
    job = dead.job()
    if job is None:
        return None
    base, _, tries = job.id.partition(RETRY_SUFFIX)
    new_id = f"{base}{RETRY_SUFFIX}{int(tries or 0) + 1}"
    retried = dataclasses.replace(job, id=new_id, deadline_at=None)
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.JOBS_STREAM, {"job": retried.to_json()})
    pipe.incr(keys.QUEUE_DEPTH_KEY)
    pipe.incr(keys.USER_QUEUED_PREFIX + job.sender_key)
    pipe.expire(keys.USER_QUEUED_PREFIX + job.sender_key, keys.USER_QUEUED_TTL_S)
    pipe.xdel(keys.DEAD_STREAM, dead_id)
    pipe.execute()
    return new_id


def drop(client: redis.Redis, dead_id: str) -> bool:
    return bool(client.xdel(keys.DEAD_STREAM, dead_id))
