"""/models: the registry's models, which are live now, and which this conversation uses."""

from __future__ import annotations

from jobs.heartbeats import live_models
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    live = live_models(env.redis)
    current = env.conversation_model(context.job.scope) or env.settings.default_model
    lines = ["Models (* live now, > this conversation's):"]
    for spec in env.registry.specs():
        mark = ("*" if spec.name in live else " ") + (">" if spec.name == current else " ")
        lines.append(f"{mark} {spec.name} [{spec.backend}] {spec.description}")
    publisher.final("\n".join(lines))
