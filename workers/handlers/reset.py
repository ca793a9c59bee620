"""/reset: forget this conversation's earlier turns (its documents and model stay)."""

from __future__ import annotations

from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    had_turns = env.memory.clear(context.job.scope.key)
    publisher.final("Forgot this conversation's earlier questions and answers; its documents and model "
                    "stay." if had_turns else "This conversation had no earlier questions to forget.")
