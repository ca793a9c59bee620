"""The messages that show one reply, kept in step with its text: edit what changed, post the rest, delete extras.

Every platform shows a reply the same way: the text is split into pieces (bot/render.py), and the
posted messages are made to read those pieces. Only how to post, edit and delete one message is the
platform's (a :class:`MessageSurface`); the bookkeeping lives here once. With a :class:`PostedStore`,
the posted messages are kept in Redis as they change, so an adapter restarted mid-answer edits the
messages it had posted instead of posting the answer a second time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import redis.asyncio as aioredis

from bot.tasks import finish_anyway
from jobs import keys

Ref = TypeVar("Ref")


class MessageSurface(Protocol[Ref]):
    """One platform's three message operations; ``Ref`` is what it needs to find a message again."""

    async def post(self, text: str, index: int, rate_job: str = "") -> Ref:
        """Post a new message (``index`` 0 is the reply's first message), returning its reference.
        With ``rate_job``, it carries the 👍/👎 controls for that job's answer."""

    async def edit(self, ref: Ref, text: str, rate_job: str = "") -> Ref:
        """Make the message read ``text`` (with the 👍/👎 controls for ``rate_job``); returns its
        (possibly new) reference."""

    async def delete(self, ref: Ref) -> None:
        """Remove the message."""

    def ref_key(self, ref: Ref) -> str:
        """The message's id as a string, to keep in Redis."""

    def ref_of(self, key: str) -> Ref:
        """The reference for an id :meth:`ref_key` gave (after a restart)."""


class PostedStore:
    """One job's posted messages (and a surface's other state, e.g. an open stream) in Redis, for a day."""

    def __init__(self, redis: aioredis.Redis, job_id: str):
        self.redis = redis
        self.key = keys.REPLY_MESSAGES_PREFIX + job_id

    async def load(self) -> dict[str, Any]:
        raw = await self.redis.get(self.key)
        if not raw:
            return {}
        state = json.loads(raw)
        return {"messages": state} if isinstance(state, list) else dict(state)

    async def save(self, state: dict[str, Any]) -> None:
        await self.redis.set(self.key, json.dumps(state), ex=keys.REPLY_MESSAGES_TTL_S)


class PostedMessages(Generic[Ref]):
    """The messages posted for one reply and the text each shows, in order."""

    def __init__(self, surface: MessageSurface[Ref], on_change: Callable[[], None] | None = None,
                 store: PostedStore | None = None):
        self.surface = surface
        self.posted: list[tuple[Ref, str]] = []
        self.extra: dict[str, Any] = {}  # the surface's own state, kept with the messages
        self._on_change = on_change
        self.store = store
        self._is_loaded = store is None

    async def load(self) -> None:
        """Pick up what an earlier adapter process posted for this reply (once; no-op without a store)."""
        if self._is_loaded:
            return
        self._is_loaded = True
        assert self.store is not None
        state = await self.store.load()
        if state and not self.posted:
            self.posted = [(self.surface.ref_of(str(key)), str(text)) for key, text in state.get("messages", [])]
            self.extra = {k: v for k, v in state.items() if k != "messages"}

    async def save(self) -> None:
        if self.store is not None:
            messages = [[self.surface.ref_key(ref), text] for ref, text in self.posted]
            await self.store.save({"messages": messages, **self.extra})

    def edits_needed(self, pieces: list[str]) -> int:
        """Edits and deletions (the calls edit budgets count) that :meth:`sync` would make."""
        changed = sum(1 for i, piece in enumerate(pieces) if i < len(self.posted) and self.posted[i][1] != piece)
        return changed + max(0, len(self.posted) - len(pieces))

    async def sync(self, pieces: list[str], rate_job: str = "") -> None:
        """Make the messages read ``pieces``; with ``rate_job``, the last one carries the 👍/👎 controls
        (the one rule for where ratings go, on every platform). A failure leaves what was done recorded,
        so a retry resumes."""
        await self.load()
        last = len(pieces) - 1
        for index, piece in enumerate(pieces):
            rating = rate_job if index == last else ""
            if index < len(self.posted):
                ref, shown = self.posted[index]
                if shown != piece or (rating and not self._is_rated(ref)):
                    self.posted[index] = (await self.surface.edit(ref, piece, rating), piece)
                    self._mark_rated(index, rating)
                    await self._changed()
            else:
                # Shielded: a post that reaches the platform is recorded even if this task is cancelled
                # (an adapter stopping mid-answer), so the next adapter edits it instead of posting again.
                await finish_anyway(self._post(piece, index, rating))
        # The final text can be shorter than the streamed one (an error after partial text, say).
        while len(self.posted) > len(pieces):
            await self.surface.delete(self.posted[-1][0])
            self.posted.pop()
            await self._changed()

    async def _post(self, piece: str, index: int, rate_job: str) -> None:
        self.posted.append((await self.surface.post(piece, index, rate_job), piece))
        self._mark_rated(index, rate_job)
        await self._changed()

    def _is_rated(self, ref: Ref) -> bool:
        return bool(self.extra.get("rated")) and self.extra.get("rated") == self.surface.ref_key(ref)

    def _mark_rated(self, index: int, rate_job: str) -> None:
        if rate_job:
            self.extra["rated"] = self.surface.ref_key(self.posted[index][0])

    def mark_rated(self, ref: Ref) -> None:
        """A surface showed the controls on ``ref`` itself (e.g. when stopping a stream)."""
        self.extra["rated"] = self.surface.ref_key(ref)

    async def start_afresh(self) -> None:
        """Forget the posted messages: the next sync posts new ones (editing the old ones keeps failing)."""
        await self.load()
        self.posted = []
        await self._changed()

    async def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
        await self.save()
