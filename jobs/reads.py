"""What a DM question may read: the scopes an adapter grants from the platform's own answer.

The adapter finds the channels the asker can read now (Slack membership, Discord permissions) and
hands their scope keys to the job (:attr:`jobs.protocol.Job.reads`); nothing here comes from user text.
A document shared in a thread lives in the thread's scope, so each granted channel brings the threads
that hold documents (the store records them under CHANNEL_THREADS_PREFIX), filtered by the platform's
rule for threads (``allow_thread``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.scope import Scope
from jobs import keys


@dataclass(frozen=True)
class Reads:
    """The scopes a DM question reads beyond its own, and each channel's name for its citations."""

    scope_keys: list[str] = field(default_factory=list)
    channel_names: dict[str, str] = field(default_factory=dict)  # channel scope key -> name

    @property
    def channels(self) -> int:
        return len(self.channel_names)


async def with_threads(redis: Any, channels: Mapping[Scope, str],
                       allow_thread: Callable[[Scope], Awaitable[bool]] | None = None) -> Reads:
    """The ``channels`` (scope -> name) and their threads that hold documents and ``allow_thread`` admits
    (all, without it); one round trip to Redis however many channels."""
    ordered: Sequence[Scope] = sorted(channels, key=lambda scope: scope.key)
    threads: list[Any] = []
    if ordered:
        async with redis.pipeline(transaction=False) as pipe:
            for scope in ordered:
                pipe.smembers(keys.CHANNEL_THREADS_PREFIX + scope.key)
            threads = await pipe.execute()
    scope_keys: list[str] = []
    for scope, members in zip(ordered, threads, strict=True):
        scope_keys.append(scope.key)
        for raw in sorted(members):
            thread = Scope.parse(raw.decode() if isinstance(raw, bytes) else raw)
            if thread.channel_scope == scope and (allow_thread is None or await allow_thread(thread)):
                scope_keys.append(thread.key)
    return Reads(scope_keys, {scope.key: channels[scope] for scope in ordered})
