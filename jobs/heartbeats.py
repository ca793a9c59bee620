"""Workers' heartbeats: one sorted set of expiry times and one hash of details (:class:`WorkerInfo`).

Reading costs O(live workers) whatever else Redis holds (no keyspace scan). A reader also drops the
heartbeats that expired, so the two keys stay as small as the fleet. Times come from Redis (TIME),
so hosts with skewed clocks agree on who is live. Workers write them (the thread renewing them is
:mod:`workers.heartbeat`); the CLI, the status job, metrics and adapters (the Discord model picker)
read them, hence this module sits in the shared contract.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis
import redis.asyncio as aioredis

from jobs import keys

# KEYS: live zset, info hash. Returns the heartbeat JSON of every live worker, longest-lived first.
LIVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 999, #gone)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local found = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then found[#found + 1] = raw end
end
return found
"""

# KEYS: live zset, info hash; ARGV: worker id, heartbeat json, ttl ms
ANNOUNCE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

HEARTBEAT_KEYS = [keys.WORKERS_LIVE_KEY, keys.WORKERS_INFO_KEY]


async def live_heartbeats(client: aioredis.Redis) -> list[bytes]:
    """The heartbeat JSON of every live worker (for adapters, on the asyncio client)."""
    return list(await client.eval(LIVE_LUA, 2, *HEARTBEAT_KEYS))


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's heartbeat, as stored (JSON) in ``keys.WORKERS_INFO_KEY``."""

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
    """The models some ready worker serves now."""
    return {m for w in live_workers(client) if w.state == "ready" for m in w.models}
