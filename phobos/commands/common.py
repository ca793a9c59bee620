"""What every command shares: the one-sentence usage error and scope arguments."""

from __future__ import annotations

from core.scope import Scope


class UsageError(Exception):
    """What a command was given cannot be used: shown as one sentence, exit status 2, no traceback."""


def parse_scope(key: str) -> Scope:
    try:
        return Scope.parse(key)
    except ValueError as exc:
        raise UsageError(f"{exc}.") from None
