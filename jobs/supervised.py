"""The state of the processes `phobos up` supervises, as that supervisor publishes it for `/status`.

One hash (:data:`jobs.keys.SUPERVISED_KEY`), one field per child (``host:pid:name``, so several
`phobos up` on one Redis do not overwrite each other), each a JSON :class:`ChildState`. The supervisor
rewrites its fields every few seconds; a field not rewritten for :data:`STALE_AFTER_S` belongs to a
supervisor that died without removing it, and readers skip it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from jobs import keys

STALE_AFTER_S = 30.0


@dataclass(frozen=True)
class ChildState:
    name: str  # worker, discord, slack
    host: str
    supervisor_pid: int
    state: str  # starting | running | restarting | stopped
    pid: int | None  # the child's pid while it runs
    restarts: int  # how often it was started again after dying
    last_failure: str  # how it last died ("exit code 1: ..."), empty when it never did
    updated_at: float  # unix time

    @property
    def field(self) -> str:
        return f"{self.host}:{self.supervisor_pid}:{self.name}"

    def describe(self) -> str:
        """One line for a person: ``discord adapter: restarting (3 restarts; last: exit code 1: ...)``."""
        what = "worker" if self.name == "worker" else f"{self.name} adapter"
        extra = [f"{self.restarts} restart(s)"] if self.restarts else []
        if self.last_failure and self.state != "running":
            extra.append(f"last: {self.last_failure}")
        elif self.last_failure:
            extra.append(f"last failure: {self.last_failure}")
        return f"{what} ({self.host}): {self.state}" + (f" ({'; '.join(extra)})" if extra else "")


def publish(client: redis.Redis, states: list[ChildState]) -> None:
    if states:
        client.hset(keys.SUPERVISED_KEY, mapping={s.field: json.dumps(asdict(s)) for s in states})


def withdraw(client: redis.Redis, states: list[ChildState]) -> None:
    if states:
        client.hdel(keys.SUPERVISED_KEY, *[s.field for s in states])


def current(client: redis.Redis, now: float | None = None) -> list[ChildState]:
    """The children of live supervisors, by host, supervisor and name."""
    now = time.time() if now is None else now
    found = [ChildState(**json.loads(raw)) for raw in client.hgetall(keys.SUPERVISED_KEY).values()]
    return sorted((s for s in found if now - s.updated_at < STALE_AFTER_S), key=lambda s: s.field)
