"""/docs: the documents a question in this conversation searches."""

from __future__ import annotations

from core.text_safety import escape_name
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    job = context.job
    documents = env.store.list_documents(job.search_keys())
    if not documents:
        publisher.final("No documents are shared in this conversation yet.")
        return
    lines = [f"Documents a question here searches ({len(documents)}):"]
    for doc in documents:
        channel = job.channel_name(doc.scope_key)
        where = f"#{channel}" if channel else (
            "this thread" if doc.scope_key == job.scope.key and job.scope.thread else "this channel")
        lines.append(f"- {escape_name(doc.file_name)} ({doc.pages} {doc.unit}s, {doc.chunks} passages; {where})")
    publisher.final("\n".join(lines))
