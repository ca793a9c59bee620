"""Where a document lives and where a question looks."""

from __future__ import annotations

from dataclasses import dataclass

SEPARATOR = ":"


@dataclass(frozen=True)
class Scope:
    """Platform + workspace/guild + channel (+ thread), derived by an adapter from a platform event.

    A document shared in a thread belongs to that thread; one shared in the channel belongs to the
    channel. A question in a thread searches the thread and its channel; nothing crosses channels.
    """

    platform: str
    workspace: str
    channel: str
    thread: str | None = None

    def __post_init__(self) -> None:
        for part in (self.platform, self.workspace, self.channel, self.thread or "x"):
            if not part or SEPARATOR in part:
                raise ValueError(f"scope part {part!r} must be non-empty and contain no {SEPARATOR!r}")

    @property
    def key(self) -> str:
        """A stable string naming exactly this scope, e.g. ``slack:T1:C1:1700000000.1``."""
        parts = [self.platform, self.workspace, self.channel]
        if self.thread:
            parts.append(self.thread)
        return SEPARATOR.join(parts)

    @property
    def channel_scope(self) -> Scope:
        return Scope(self.platform, self.workspace, self.channel)

    def search_keys(self) -> list[str]:
        """The scopes a question here may read from: this one and, in a thread, its channel."""
        if self.thread:
            return [self.key, self.channel_scope.key]
        return [self.key]

    @classmethod
    def parse(cls, key: str) -> Scope:
        """Inverse of :attr:`key`. Accepts 3 or 4 parts."""
        parts = key.split(SEPARATOR)
        if len(parts) not in (3, 4) or not all(parts):
            raise ValueError(f"{key!r} is not a scope: a scope is platform:workspace:channel[:thread], each part "
                             "non-empty (for example console:local:console)")
        return cls(*parts)

    def to_dict(self) -> dict[str, str | None]:
        return {"platform": self.platform, "workspace": self.workspace, "channel": self.channel,
                "thread": self.thread}

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> Scope:
        return cls(str(data["platform"]), str(data["workspace"]), str(data["channel"]),
                   data.get("thread") or None)
