"""The quick decisions on a delivery before its job runs: drop it (unreadable), dead-letter it (too many
deliveries), expire it (past its deadline) or forward it (an ask for a model another worker serves).

Each ends the entry through the queue's fenced writes; what is left runs under a :class:`JobContext`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from jobs import keys
from jobs.heartbeats import live_models
from jobs.protocol import Job, JobKind
from telemetry import metrics
from workers import deadletter
from workers.delivery import Delivery
from workers.environment import WorkerEnvironment
from workers.runner import JobContext

log = logging.getLogger("workers.worker")  # one logger for the worker's story of each job


def admit(env: WorkerEnvironment, delivery: Delivery) -> JobContext | None:
    """The job's context if it is to run here; None when it was dropped, dead-lettered, expired or forwarded."""
    try:
        job = delivery.job()
    except (KeyError, ValueError, TypeError) as exc:
        log.error("dropping unreadable job entry %s: %s", delivery.entry_id, exc)
        env.queue.finish(delivery, user=None, reply_to=None)
        return None
    log.info("job %s entry %s delivery %d started at=%.3f", job.id, delivery.entry_id,
             delivery.times_delivered, time.time())
    if delivery.times_delivered > env.settings.max_deliveries:
        event = deadletter.failure_event(job, delivery.times_delivered)
        record = deadletter.dead_record(delivery.fields[b"job"].decode(), delivery.entry_id,
                                        delivery.times_delivered, "max deliveries")
        env.queue.finish(delivery, job.sender_key, job.reply_to, event.to_json(), record)
        metrics.dead_lettered(job.kind)
        log.error("job %s dead-lettered after %d deliveries", job.id, delivery.times_delivered - 1)
        return None
    context = JobContext(delivery, job)
    if job.deadline_at is not None and time.time() > job.deadline_at:
        env.publisher(context).error("This request waited past its deadline before a worker was free, "
                                     "so it was dropped rather than answered late. Please ask again.",
                                     outcome="expired")
        return None
    if forward_if_served_elsewhere(env, delivery, job):
        return None
    return context


def forward_if_served_elsewhere(env: WorkerEnvironment, delivery: Delivery, job: Job) -> bool:
    """An ask for a model this worker does not serve but a live worker does goes to that model's stream.

    The model is fixed on the forwarded job, so the worker that takes it does not resolve it again
    (its default may differ). Forwarding is not finishing: no reply, the counters stay until then.
    """
    if job.kind is not JobKind.ASK or delivery.stream != keys.JOBS_STREAM:
        return False
    model = env.model_for(job)
    if model in env.generators or model not in live_models(env.redis):
        return False  # served here, or by nobody: the ask handler answers (with the error naming the live models)
    forwarded = dataclasses.replace(job, model=model)
    if env.queue.forward(delivery, keys.model_stream(model), forwarded.to_json()):
        log.info("job %s forwarded to the workers serving %s", job.id, model)
    else:
        log.warning("job %s was taken over by another worker before it was forwarded", job.id)
    return True
