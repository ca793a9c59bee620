"""Telling our citations from bracketed numbers that belong to the quoted text.

An answer cites source 2 as "[2]", but the documents people share carry bracketed numbers of their own:
R prints "[1] 104.5" before every result, a paper cites its references as "[12]". When an answer quotes
such text, those brackets are not citations; read as ones, they point the claim check at the wrong source
(and mark a verbatim quote as unsupported) and list sources the answer never used. A marker is the
document's own when it occurs in a source with the words next to it, since a citation the model or the
extractive quoter writes is never part of the text it quotes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The numbers of a citation group: 1 / 1, 2 / 1-3 / 1 and 2. The one definition both parsers (core/prompt.py
# through mask_quoted, core/claims/sentences.py) and this module read citations with.
CITATION_NUMBERS = r"\d{1,3}(?:\s*(?:,|;|-|–|and)\s*\d{1,3})*"
CITATION = re.compile(rf"\[({CITATION_NUMBERS})\]")
CONTEXT_WORDS = 2  # words taken on one side of a marker
MIN_CONTEXT_CHARS = 4  # non-space characters that side needs before a match in a source means anything
WINDOW_CHARS = 80  # how far to look for those words
_SPACE = re.compile(r"\s+")
# Stand-ins for the brackets of a quoted marker: the same length, so every offset into the text stays true,
# and matched by no citation pattern. From Unicode's private use area, which no answer or document uses.
_OPEN, _CLOSE = "\ue000", "\ue001"


def quoted_markers(text: str, sources: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of every bracketed number in ``text`` that is quoted from one of ``sources``: the marker
    with the words just before it, or just after it, occurs in a source as written ("res # [1]", "[1] 104.5").
    One side is enough, since a model quoting R output often writes its own words on the other."""
    if "[" not in text or not sources:
        return []
    flat = [_SPACE.sub(" ", source) for source in sources]
    found = []
    for match in CITATION.finditer(text):
        if any(context in source for context in _contexts(text, match) for source in flat):
            found.append(match.span())
    return found


def _contexts(text: str, match: re.Match[str]) -> list[str]:
    """The marker with the words before it and with the words after it, each as the text spaces it."""
    start, end, marker = match.start(), match.end(), match.group(0)
    before = text[max(0, start - WINDOW_CHARS):start]
    after = text[end:end + WINDOW_CHARS]
    before_words = before.split()[-CONTEXT_WORDS:]
    after_words = after.split()[:CONTEXT_WORDS]
    sides = []
    # Other markers are no context: "[1] and [2]" occurs in many a paper, and in answers citing two sources.
    if len(CITATION.sub("", "".join(before_words))) >= MIN_CONTEXT_CHARS:
        gap = " " if before[-1:].isspace() else ""
        sides.append(" ".join(before_words) + gap + marker)
    if len(CITATION.sub("", "".join(after_words))) >= MIN_CONTEXT_CHARS:
        gap = " " if after[:1].isspace() else ""
        sides.append(marker + gap + " ".join(after_words))
    return sides


def mask_quoted(text: str, sources: Sequence[str]) -> str:
    """``text`` with the brackets of its quoted markers replaced, so no citation parser reads them."""
    chars = list(text)
    for start, end in quoted_markers(text, sources):
        chars[start], chars[end - 1] = _OPEN, _CLOSE
    return "".join(chars)


def unmask(text: str) -> str:
    """The brackets :func:`mask_quoted` replaced, back: the text as the source has it."""
    return text.replace(_OPEN, "[").replace(_CLOSE, "]")
