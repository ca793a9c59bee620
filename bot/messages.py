"""The messages that show one reply, kept in step with its text: edit what changed, post the rest, delete extras.

Every platform shows a reply the same way: the text is split into pieces (bot/render.py), and the
posted messages are made to read those pieces. Only how to post, edit and delete one message is the
platform's (a :class:`MessageSurface`); the bookkeeping lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

Ref = TypeVar("Ref")


class MessageSurface(Protocol[Ref]):
    """One platform's three message operations; ``Ref`` is what it needs to find a message again."""

    async def post(self, text: str, index: int) -> Ref:
        """Post a new message (``index`` 0 is the reply's first message), returning its reference."""

    async def edit(self, ref: Ref, text: str) -> Ref:
        """Make the message read ``text``; returns its (possibly new) reference."""

    async def delete(self, ref: Ref) -> None:
        """Remove the message."""


class PostedMessages(Generic[Ref]):
    """The messages posted for one reply and the text each shows, in order."""

    def __init__(self, surface: MessageSurface[Ref], on_change: Callable[[], None] | None = None):
        self.surface = surface
        self.posted: list[tuple[Ref, str]] = []
        self._on_change = on_change

    def edits_needed(self, pieces: list[str]) -> int:
        """Edits and deletions (the calls edit budgets count) that :meth:`sync` would make."""
        changed = sum(1 for i, piece in enumerate(pieces) if i < len(self.posted) and self.posted[i][1] != piece)
        return changed + max(0, len(self.posted) - len(pieces))

    async def sync(self, pieces: list[str]) -> None:
        """Make the messages read ``pieces``. A failure leaves what was done recorded, so a retry resumes."""
        for index, piece in enumerate(pieces):
            if index < len(self.posted):
                ref, shown = self.posted[index]
                if shown != piece:
                    self.posted[index] = (await self.surface.edit(ref, piece), piece)
                    self._changed()
            else:
                self.posted.append((await self.surface.post(piece, index), piece))
                self._changed()
        # The final text can be shorter than the streamed one (an error after partial text, say).
        while len(self.posted) > len(pieces):
            await self.surface.delete(self.posted[-1][0])
            self.posted.pop()
            self._changed()

    def start_afresh(self) -> None:
        """Forget the posted messages: the next sync posts new ones (editing the old ones keeps failing)."""
        self.posted = []
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
