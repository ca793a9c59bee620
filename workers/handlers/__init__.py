"""One handler per job kind, each in its own module; :data:`HANDLERS` is the table the worker dispatches on.

A handler is ``handle(env, context, publisher)``: everything it may use is in ``env``
(:class:`workers.environment.WorkerEnvironment`), the job and its cancel flag in ``context``, and every
reply goes through ``publisher`` (the queue's fenced writes). Every outcome ends in one final or error
event; an exception is turned into an error reply by the worker.
"""

from __future__ import annotations

from collections.abc import Callable

from jobs.protocol import JobKind
from workers.environment import WorkerEnvironment
from workers.handlers import ask, dm_search, docs, forget, ingest, models, reset, set_model, status
from workers.replies import ReplyPublisher
from workers.runner import JobContext

Handler = Callable[[WorkerEnvironment, JobContext, ReplyPublisher], None]

HANDLERS: dict[JobKind, Handler] = {
    JobKind.ASK: ask.handle,
    JobKind.INGEST: ingest.handle,
    JobKind.DOCS: docs.handle,
    JobKind.FORGET: forget.handle,
    JobKind.SET_MODEL: set_model.handle,
    JobKind.MODELS: models.handle,
    JobKind.STATUS: status.handle,
    JobKind.RESET: reset.handle,
    JobKind.DM_SEARCH: dm_search.handle,
}
