"""/status: live workers, the queue (jobs/queue_state.py's one depth), `phobos up`'s children, this
worker's index cache."""

from __future__ import annotations

from jobs import queue_state, supervised
from jobs.heartbeats import live_workers
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    workers = live_workers(env.redis)
    state = queue_state.read(env.redis)
    lines = [f"{len(workers)} worker(s) live; {state.depth} job(s) waiting, {state.pending} running; "
             f"{state.dead} dead-lettered."]
    lines += [f"- {w.worker_id} on {w.host}: {', '.join(w.models)}" for w in workers]
    lines += [f"- {child.describe()}" for child in supervised.current(env.redis) if child.name != "worker"]
    cache = env.store.cache
    lines.append(f"This worker ({env.worker_id}) holds {len(cache)} scope index(es) in "
                 f"{cache.nbytes:,} of {cache.max_bytes:,} bytes.")
    publisher.final("\n".join(lines))
