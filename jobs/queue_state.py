"""A snapshot of the job queue as Redis holds it, with one definition of queue depth.

``depth`` is the consumer-group lag summed over the general jobs stream and every per-model stream:
jobs submitted that no worker has taken yet (what KEDA scales on). Beside it, under their own names:
``pending`` (taken by a worker and not finished: running, or held by a dead worker until reclaimed),
``admitted`` (the admission counter, ``keys.QUEUE_DEPTH_KEY``: jobs queued or running, what
``PHOBOS_MAX_QUEUE_DEPTH`` limits), ``workers`` (live heartbeats) and ``dead`` (dead-lettered jobs).
``phobos status``, the worker's status job and the metrics all read this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from jobs import keys
from jobs.heartbeats import live_workers


@dataclass(frozen=True)
class StreamState:
    name: str
    lag: int  # entries the worker group has not read yet (XINFO GROUPS, Redis 7+)
    pending: int  # entries read by a worker and not acknowledged: jobs running, or held by a dead worker


@dataclass(frozen=True)
class QueueState:
    streams: tuple[StreamState, ...]
    admitted: int  # the admission counter: jobs queued or running
    workers: int  # live workers
    dead: int  # entries in the dead-letter stream

    @property
    def depth(self) -> int:
        """Jobs waiting for a worker: the group's lag summed over every job stream."""
        return sum(s.lag for s in self.streams)

    @property
    def pending(self) -> int:
        """Jobs taken by a worker and not yet finished, over every job stream."""
        return sum(s.pending for s in self.streams)


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
    return QueueState(streams, int(client.get(keys.QUEUE_DEPTH_KEY) or 0), workers, dead)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
