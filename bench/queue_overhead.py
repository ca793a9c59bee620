"""The queue's own overhead with a no-op generator, as JSON: enqueue -> worker starts the job, and
worker posts the final event -> the adapter has it. p50/p99 in milliseconds. (Not named queue.py: a
script's folder comes first on sys.path, and it would shadow the standard library's ``queue``.)

A real redis-server (the embedded one, in a throwaway dir); the worker runs in a thread of this process so
both ends read one clock. Jobs go one at a time, so the figures are overhead, not time spent waiting in line:
    .venv/bin/python bench/queue_overhead.py [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backends.echo import EchoGenerator
from core.ingest import IngestLimits
from core.registry import ModelRegistry, ModelSpec
from core.scope import Scope
from jobs.admission import AdmissionLimits
from jobs.client import JobClient
from jobs.connection import RedisOptions, async_redis_client, redis_client
from jobs.protocol import Job, JobKind
from phobos.redis_server import EmbeddedRedis
from workers.replies import ReplyPublisher
from workers.runner import JobContext
from workers.settings import WorkerSettings
from workers.worker import Worker


class NoEmbedder:
    """The echo generator never retrieves: a question in a scope without documents is never embedded."""

    name, dim, max_tokens = "none", 4, 10


class TimedWorker(Worker):
    """Records when each job starts and when its final event is handed to Redis."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.started_at: dict[str, float] = {}
        self.finished_at: dict[str, float] = {}

    def handle(self, context: JobContext, publisher: ReplyPublisher) -> None:
        job = context.job
        self.started_at[job.id] = time.perf_counter()
        finish = publisher._finish

        def timed_finish(event):  # type: ignore[no-untyped-def]
            self.finished_at[job.id] = time.perf_counter()
            return finish(event)

        publisher._finish = timed_finish  # type: ignore[method-assign]
        super().handle(context, publisher)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "max_ms": round(ordered[-1], 3)}


async def drive(url: str, worker: TimedWorker, jobs: int) -> dict[str, object]:
    client = async_redis_client(url, RedisOptions())
    adapter = JobClient(client, "bench", limits=AdmissionLimits(), job_deadline_s=60)
    await adapter.start_listening()
    replies = adapter.replies(block_ms=1000)
    submitted: dict[str, float] = {}
    received: dict[str, float] = {}
    scope = Scope("console", "bench", "queue")
    for n in range(jobs):
        job = Job(id=f"bench:{n}", kind=JobKind.ASK, scope=scope, user="bench", reply_to=adapter.reply_stream,
                  text=f"ping {n}", model="echo")
        submitted[job.id] = time.perf_counter()
        await adapter.submit(job)
        async for event in replies:
            if event.job_id == job.id and event.is_terminal:
                received[job.id] = time.perf_counter()
                break
    await client.aclose()
    ids = [i for i in submitted if i in worker.started_at and i in received][10:]  # skip warm-up
    return {
        "jobs": len(ids),
        "enqueue_to_worker_start": percentiles([worker.started_at[i] - submitted[i] for i in ids]),
        "final_event_to_adapter": percentiles([received[i] - worker.finished_at[i] for i in ids]),
        "round_trip": percentiles([received[i] - submitted[i] for i in ids]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        embedded = EmbeddedRedis(Path(state))
        embedded.ensure_running()
        try:
            spec = ModelSpec(name="echo", backend="echo")
            config = WorkerSettings(default_model="echo", worker_id="bench")
            worker = TimedWorker(redis_client(embedded.url, RedisOptions()), NoEmbedder(),  # type: ignore[arg-type]
                                 {"echo": EchoGenerator(spec)}, ModelRegistry({"echo": spec}), config,
                                 ingest_limits=IngestLimits(1, 1, 10, 0))
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            result = asyncio.run(drive(embedded.url, worker, args.jobs))
            worker.stop()
            thread.join(timeout=5)
        finally:
            embedded.stop()
    print(json.dumps({"bench": "queue", "generator": "echo (no-op)", "redis": "embedded, unix socket",
                      **result}, indent=2))


if __name__ == "__main__":
    main()
