"""/dm-search on|off: whether DM questions read this server's channels.

The adapter lets only members allowed to manage the server send this; the adapters read the switch
(``keys.dm_search``) at each DM.
"""

from __future__ import annotations

from jobs import keys
from workers.environment import WorkerEnvironment
from workers.replies import ReplyPublisher
from workers.runner import JobContext


def handle(env: WorkerEnvironment, context: JobContext, publisher: ReplyPublisher) -> None:
    job = context.job
    setting = job.text.strip().lower()
    if setting not in ("on", "off"):
        publisher.error("Say `on` or `off`: whether questions asked in a DM may read the documents of "
                        "this server's channels the asker can read.")
        return
    key = keys.dm_search(job.scope.platform, job.scope.workspace)
    if setting == "on":
        env.redis.set(key, "on")
        publisher.final("DM questions now read the documents of every channel of this server the asker "
                        "can see and read the history of, checked at each question. `off` stops it.")
    else:
        env.redis.delete(key)
        publisher.final("DM questions no longer read this server's channels; a DM sees only its own "
                        "documents.")
