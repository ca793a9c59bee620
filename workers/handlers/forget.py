"""/forget NAME (or all): drop documents shared in this conversation."""

from __future__ import annotations

from core.text_safety import escape_name
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    job = context.job
    target = job.text.strip()
    documents = env.store.list_documents([job.scope.key])
    chosen = documents if target in ("", "all", "*") else [
        d for d in documents if target in (d.file_name, escape_name(d.file_name))]
    if not chosen:
        names = ", ".join(escape_name(d.file_name) for d in documents) or "none"
        publisher.error(f"No document called '{escape_name(target)}' here. Documents: {names}.")
        return
    for doc in chosen:
        env.store.forget(doc.scope_key, doc.doc_id)
    publisher.final("Forgot " + ", ".join(escape_name(d.file_name) for d in chosen) + ".")
