"""An ingest: read a shared file, embed it slice by slice (its progress saved under the delivery's fence,
so another worker goes on from there), and say what was indexed."""

from __future__ import annotations

import logging

from core.ingest import IngestInterrupted, ingest_document
from telemetry import metrics
from workers.environment import WorkerEnvironment
from workers.ingest_progress import RedisProgressStore
from workers.replies import ReplyPublisher
from workers.runner import JobContext

log = logging.getLogger(__name__)


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    job = context.job
    file_name = job.file_name or "document.pdf"
    data = env.redis.get(job.blob_key) if job.blob_key else None
    if data is None:
        publisher.error(f"The contents of {file_name} never reached the worker or expired; "
                        "please share it again.")
        return
    cancel = context.cancel
    saved = RedisProgressStore(env.redis, env.queue.fence(context.delivery), file_name)
    try:
        result = ingest_document(data, file_name, job.scope.key,  # type: ignore[arg-type]
                                 env.embedder, env.store, env.ingest_limits, user=job.user,
                                 progress=publisher.progress, between_slices=env.between_slices, saved=saved,
                                 should_stop=lambda: cancel.is_set() or env.stopping.is_set())
    except IngestInterrupted as stopped:
        if env.stopping.is_set():
            # Shutting down: the slices done so far are saved; the next worker goes on from there.
            context.is_handing_back = True
            log.info("ingest of %s stopped after page %d of %d; handing it back with its progress",
                     file_name, stopped.pages_done, stopped.total)
        else:
            log.warning("ingest of %s stopped after page %d of %d: another worker holds it now",
                        file_name, stopped.pages_done, stopped.total)
        return
    log.info("ingest of %s: %d passages embedded here, %d taken from an earlier run's saved slices",
             file_name, result.embedded, result.resumed)
    env.redis.delete(job.blob_key)  # type: ignore[arg-type]
    metrics.INGEST_PAGES.inc(0 if result.already_indexed else result.info.pages)
    publisher.final(result.summary())
