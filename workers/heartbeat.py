"""Workers announce themselves and the models they serve with a heartbeat that expires unless renewed.

Heartbeats live in one sorted set (expiry times) and one hash (details), see :mod:`jobs.heartbeats`:
reading who is live costs O(workers), not a scan of every key in Redis.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import asdict, dataclass

import redis

from jobs import keys
from jobs.heartbeats import ANNOUNCE_LUA, HEARTBEAT_KEYS, LIVE_LUA


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    models: list[str]
    started_at: float
    state: str = "ready"  # loading | ready | stopping


def announce(client: redis.Redis, info: WorkerInfo, ttl_s: int) -> None:
    """Mark the worker live for ``ttl_s`` more seconds, with its details."""
    client.eval(ANNOUNCE_LUA, 2, *HEARTBEAT_KEYS, info.worker_id, json.dumps(asdict(info)), int(ttl_s * 1000))


def withdraw(client: redis.Redis, worker_id: str) -> None:
    """The worker is gone now, not when its heartbeat would expire."""
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(keys.WORKERS_LIVE_KEY, worker_id)
        pipe.hdel(keys.WORKERS_INFO_KEY, worker_id)
        pipe.execute()


def live_workers(client: redis.Redis) -> list[WorkerInfo]:
    """Workers whose heartbeat has not expired, oldest first; O(workers)."""
    raw: list[bytes] = client.eval(LIVE_LUA, 2, *HEARTBEAT_KEYS)
    return sorted((WorkerInfo(**json.loads(r)) for r in raw), key=lambda w: w.started_at)


def live_models(client: redis.Redis) -> set[str]:
    return {m for w in live_workers(client) if w.state == "ready" for m in w.models}


class HeartbeatThread(threading.Thread):
    """Renews the worker's heartbeat every third of its TTL until stopped."""

    def __init__(self, client: redis.Redis, info: WorkerInfo, ttl_s: int):
        super().__init__(name="heartbeat", daemon=True)
        self.client = client
        self.info = info
        self.ttl_s = ttl_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            # Redis away: the next beat tries again.
            with contextlib.suppress(redis.RedisError, OSError):
                announce(self.client, self.info, self.ttl_s)
            self._stop_event.wait(max(1.0, self.ttl_s / 3))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        with contextlib.suppress(redis.RedisError, OSError):
            withdraw(self.client, self.info.worker_id)
