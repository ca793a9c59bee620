"""The thread that keeps a worker's heartbeat alive; the heartbeat's shape and readers are
:mod:`jobs.heartbeats` (the contract owns every Redis shape)."""

from __future__ import annotations

import contextlib
import threading

import redis

from jobs.heartbeats import WorkerInfo, announce, withdraw


class HeartbeatThread(threading.Thread):
    """Renews the worker's heartbeat every third of its TTL until stopped."""

    def __init__(self, client: redis.Redis, info: WorkerInfo, ttl_s: int):
        super().__init__(name="heartbeat", daemon=True)
        self.client = client
        self.info = info
        self.ttl_s = ttl_s
        self._stop_event = threading.Event()
        # Held while a beat is sent: a beat still in flight when the worker stops (a slow Redis on a busy
        # machine) would otherwise land after the withdrawal and show a stopped worker live for a TTL.
        self._beat_lock = threading.Lock()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with self._beat_lock:
                if self._stop_event.is_set():
                    break
                # Redis away: the next beat tries again.
                with contextlib.suppress(redis.RedisError, OSError):
                    announce(self.client, self.info, self.ttl_s)
            self._stop_event.wait(max(1.0, self.ttl_s / 3))

    def stop(self) -> None:
        self._stop_event.set()
        # The lock waits for a beat in flight (bounded by the client's socket timeout).
        with self._beat_lock, contextlib.suppress(redis.RedisError, OSError):
            withdraw(self.client, self.info.worker_id)
        self.join(timeout=5)
