"""/model NAME: the model this conversation's questions use from now on."""

from __future__ import annotations

from jobs.heartbeats import live_models
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    job = context.job
    name = job.text.strip()
    env.registry.get(name)  # raises UnknownModelError with the known names
    env.conversations.set_model(job.scope.key, name)
    live = live_models(env.redis)
    note = "" if name in live else (f" No worker serves it right now; live models: "
                                    f"{', '.join(sorted(live)) or 'none'}.")
    publisher.final(f"This conversation now uses {name}.{note}")
