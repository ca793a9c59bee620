"""Turning answers into chat messages: sources lines and splitting at a platform's length limit."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.documents import Citation

CODE_FENCE = "```"


def format_sources(citations: Sequence[Citation], link: Callable[[Citation], str | None] | None = None) -> str:
    """A 'Sources:' block, one numbered line per cited file and pages; ``link`` may add a URL per source."""
    if not citations:
        return ""
    lines = ["Sources:"]
    for number, citation in enumerate(citations, start=1):
        url = link(citation) if link else None
        where = f"#{citation.channel} · " if citation.channel else ""  # a DM's answer says which channel
        lines.append(f"[{number}] {where}{citation.label()}" + (f" <{url}>" if url else ""))
    return "\n".join(lines)


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters.

    Prefers paragraph, then line, then word boundaries; never splits a word unless it alone is longer
    than ``limit``. A code block cut in two is closed at the end of one piece and reopened in the next,
    so each piece renders on its own.
    """
    if limit < 2 * len(CODE_FENCE) + 10:
        raise ValueError("limit too small to split safely")
    pieces: list[str] = []
    rest = text
    reopen = ""
    while rest:
        rest = reopen + rest
        if len(rest) <= limit:
            pieces.append(rest)
            break
        # Leave room to close a code block that the cut would leave open.
        budget = limit - len(CODE_FENCE) - 1
        cut = _best_cut(rest, budget)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip(" ")
        rest = rest.lstrip("\n") if not rest.startswith("\n" + CODE_FENCE) else rest
        if piece.count(CODE_FENCE) % 2 == 1:
            language = _open_fence_language(piece)
            piece += "\n" + CODE_FENCE
            reopen = CODE_FENCE + language + "\n"
        else:
            reopen = ""
        pieces.append(piece)
    return [p for p in pieces if p.strip()]


def _best_cut(text: str, budget: int) -> int:
    window = text[:budget]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at > budget // 3:
            return at + len(separator)
    return budget


def _open_fence_language(piece: str) -> str:
    """The language tag of the last (unclosed) code fence in ``piece``."""
    at = piece.rfind(CODE_FENCE)
    line_end = piece.find("\n", at)
    tag = piece[at + len(CODE_FENCE): line_end if line_end != -1 else len(piece)]
    return tag.strip()
