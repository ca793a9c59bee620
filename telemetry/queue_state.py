"""A snapshot of the job queue as Redis holds it: depth, per-stream lag and pending, live workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from jobs import keys
from workers.heartbeat import live_workers


@dataclass(frozen=True)
class StreamState:
    name: str
    lag: int  # entries the worker group has not read yet (XINFO GROUPS, Redis 7+); what KEDA scales on
    pending: int  # entries read by a worker and not acknowledged: jobs running, or held by a dead worker


@dataclass(frozen=True)
class QueueState:
    depth: int
    streams: tuple[StreamState, ...]
    workers_live: int
    dead: int


def job_streams(client: redis.Redis) -> list[str]:
    """The general jobs stream and every per-model stream that exists."""
    found = {_text(k) for k in client.scan_iter(match=keys.MODEL_JOBS_PREFIX + "*", count=100, _type="stream")}
    return [keys.JOBS_STREAM, *sorted(found)]


def stream_state(client: redis.Redis, stream: str, group: str = keys.WORKER_GROUP) -> StreamState | None:
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return None
    for info in groups:
        if _text(info["name"]) == group:
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell after entries were deleted mid-stream; count them instead
                undelivered: Any = client.xrange(stream, min=f"({_text(info['last-delivered-id'])}", max="+")
                lag = len(undelivered)
            return StreamState(stream, int(lag), int(info["pending"]))
    return StreamState(stream, int(client.xlen(stream)), 0)  # no worker has created the group yet


def read(client: redis.Redis) -> QueueState:
    streams = tuple(s for s in (stream_state(client, name) for name in job_streams(client)) if s is not None)
    workers = len(live_workers(client))
    dead = int(client.xlen(keys.DEAD_STREAM)) if client.exists(keys.DEAD_STREAM) else 0
    return QueueState(int(client.get(keys.QUEUE_DEPTH_KEY) or 0), streams, workers, dead)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
