"""What asking "which workers are live?" costs as Redis fills up: the old keyspace SCAN against the
heartbeat sorted set + hash, side by side in one run, as JSON (median milliseconds per call).

A throwaway redis-server (no persistence) on a unix socket holds 10 workers' heartbeats, both ways,
and N unrelated keys (documents' keys, in practice), created in pipelined batches:
    .venv/bin/python bench/live_workers_cost.py [--keys 10000 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.heartbeats import WorkerInfo, announce, live_workers
from phobos.redis_server import redis_server_binary

OLD_PREFIX = "phobos:worker:"  # the per-worker heartbeat keys the SCAN looked for
WORKERS = 10
BATCH = 10_000


def old_live_workers(client: redis.Redis) -> list[WorkerInfo]:
    """The former implementation: SCAN the keyspace for heartbeat keys, GET each."""
    found = []
    for key in client.scan_iter(match=OLD_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            found.append(WorkerInfo(**json.loads(raw)))
    return sorted(found, key=lambda w: w.started_at)


def fill(client: redis.Redis, start: int, stop: int) -> None:
    for first in range(start, stop, BATCH):
        with client.pipeline(transaction=False) as pipe:
            pipe.mset({f"phobos:chunks:scope{n}:doc": "x" for n in range(first, min(stop, first + BATCH))})
            pipe.execute()


def median_ms(call: Callable[[], object], budget_s: float, most: int) -> tuple[float, int]:
    times = []
    started = time.perf_counter()
    while len(times) < most and (not times or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--budget-s", type=float, default=5.0, help="time spent measuring each side")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        server = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--save", "",
                                   "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(unix_socket_path=str(sock))
            deadline = time.monotonic() + 10
            while not sock.exists() or not _pings(client):
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
            for n in range(WORKERS):
                info = WorkerInfo(f"w{n}", "bench", n, ["extractive"], float(n))
                client.set(OLD_PREFIX + info.worker_id, json.dumps(asdict(info)), ex=3600)
                announce(client, info, ttl_s=3600)
            filled = 0
            for total in sorted(args.keys):
                fill(client, filled, total)
                filled = total
                assert len(old_live_workers(client)) == len(live_workers(client)) == WORKERS
                old_ms, old_calls = median_ms(lambda: old_live_workers(client), args.budget_s, 1000)
                new_ms, new_calls = median_ms(lambda: live_workers(client), args.budget_s, 1000)
                rows.append({"unrelated_keys": total, "dbsize": client.dbsize(), "workers": WORKERS,
                             "scan_ms": round(old_ms, 3), "scan_calls": old_calls,
                             "sorted_set_ms": round(new_ms, 3), "sorted_set_calls": new_calls,
                             "ratio": round(old_ms / new_ms, 1)})
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(json.dumps({"bench": "live_workers", "redis": "redis-server, unix socket, no persistence",
                      "rows": rows}, indent=2))


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False


if __name__ == "__main__":
    main()
