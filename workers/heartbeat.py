"""Workers announce themselves and the models they serve with a key that expires unless renewed."""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import asdict, dataclass

import redis

from jobs import keys


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    models: list[str]
    started_at: float
    state: str = "ready"  # loading | ready | stopping


def announce(client: redis.Redis, info: WorkerInfo, ttl_s: int) -> None:
    client.set(keys.WORKER_PREFIX + info.worker_id, json.dumps(asdict(info)), ex=ttl_s)


def withdraw(client: redis.Redis, worker_id: str) -> None:
    client.delete(keys.WORKER_PREFIX + worker_id)


def live_workers(client: redis.Redis) -> list[WorkerInfo]:
    found = []
    for key in client.scan_iter(match=keys.WORKER_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            found.append(WorkerInfo(**json.loads(raw)))
    return sorted(found, key=lambda w: w.started_at)


def live_models(client: redis.Redis) -> set[str]:
    return {m for w in live_workers(client) if w.state == "ready" for m in w.models}


class HeartbeatThread(threading.Thread):
    """Renews the worker's key every third of its TTL until stopped."""

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
