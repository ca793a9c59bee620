"""An answer cut into sentences for the claim check: list items and lines apart, code blocks whole,
the citations each sentence carries (its own, or those written at the start of its line)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.citation_markers import CITATION, CITATION_NUMBERS

# Words after which a period does not end a sentence ("e.g. The", "Fig. 3", "J. Smith" handled apart).
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "cf", "vs", "viz", "al", "approx", "incl", "resp", "fig", "figs", "eq", "eqs",
    "vol", "p", "pp", "ch", "sec", "dr", "mr", "mrs", "ms", "prof", "st", "ed", "eds", "ref",
    "refs", "min", "max", "e.g.,", "a.k.a", "w.r.t",
})
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_BULLET = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+")
# A citation group ([1], [1, 2], [1-3]) is CITATION; [1][2] is two.
_LEADING_CITATIONS = re.compile(rf"^(?:\s*\[{CITATION_NUMBERS}\])+\s*")
# Sentence end: terminal punctuation, closing quotes/brackets, citations after it, then whitespace.
_END = re.compile(rf"[.!?]+[\"'”’)\]]*(?:\s*\[{CITATION_NUMBERS}\])*(?=\s+\S)")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    inherited: tuple[int, ...] = ()  # citations written before the sentence, at the start of its line
    is_code: bool = False
    is_item: bool = False  # a list item (its line starts with a bullet or a number)


def split_sentences(answer: str) -> list[str]:
    """The answer's sentences, in order: list items and lines apart, code blocks whole, citations kept."""
    return [answer[s.start:s.end] for s in sentence_spans(answer)]


def sentence_spans(answer: str) -> list[Span]:
    spans: list[Span] = []
    position = 0
    for fence in _FENCE.finditer(answer):
        spans += _prose_spans(answer, position, fence.start())
        spans.append(Span(fence.start(), fence.end(), is_code=True))
        position = fence.end()
    spans += _prose_spans(answer, position, len(answer))
    return spans


def _prose_spans(text: str, start: int, end: int) -> list[Span]:
    spans: list[Span] = []
    offset = start
    for line in text[start:end].split("\n"):
        line_start, offset = offset, offset + len(line) + 1
        is_item = _BULLET.match(line) is not None
        prefix = _BULLET.match(line) or _HEADING.match(line)
        body_start = prefix.end() if prefix else 0
        leading = _LEADING_CITATIONS.match(line, body_start)
        inherited: tuple[int, ...] = ()
        if leading:
            inherited = tuple(_numbers_in(leading.group(0)))
            body_start = leading.end()
        # Inline code may hold periods ("x.y. z"); mask it so no sentence ends inside.
        masked = _INLINE_CODE.sub(lambda m: "x" * len(m.group(0)), line)
        piece_start = body_start
        for match in _END.finditer(masked, body_start):
            if not _ends_sentence(masked, match.start(), match.end()):
                continue
            _add(spans, line, line_start, piece_start, match.end(), inherited, is_item)
            piece_start = match.end()
        _add(spans, line, line_start, piece_start, len(line), inherited, is_item)
    return spans


def _ends_sentence(line: str, punct_at: int, after: int) -> bool:
    following = line[after:].lstrip()
    if following[:1].islower() or following[:1] in (",", ";", ":", ")", "."):
        return False  # "… 1, . . . , n" and "(p. 5)": the sentence goes on
    if line[punct_at] != ".":
        return True
    word = re.search(r"([\w.]+)$", line[:punct_at])
    if not word:
        return True
    token = word.group(1).lower()
    if token in ABBREVIATIONS or token.rstrip(".") in ABBREVIATIONS:
        return False
    if token in ("no", "nos") and following[:1].isdigit():
        return False  # "No. 5", but "The answer is no. You can ..." ends a sentence
    return not (len(token) == 1 and word.group(1).isupper())  # an initial: "J. Smith"


def _add(spans: list[Span], line: str, line_start: int, start: int, end: int, inherited: tuple[int, ...],
         is_item: bool) -> None:
    piece = line[start:end]
    stripped = piece.strip()
    if not stripped or not re.search(r"\w", CITATION.sub("", stripped)):
        return
    lead = len(piece) - len(piece.lstrip())
    spans.append(Span(line_start + start + lead, line_start + start + lead + len(stripped), inherited,
                      is_item=is_item))


def _numbers_in(citations: str) -> list[int]:
    numbers: list[int] = []
    for group in CITATION.finditer(citations):
        inner = group.group(1)
        ranged = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", inner)
        if ranged and int(ranged.group(2)) - int(ranged.group(1)) < 20:
            numbers += range(int(ranged.group(1)), int(ranged.group(2)) + 1)
        else:
            numbers += [int(n) for n in re.findall(r"\d+", inner)]
    return numbers


def cited_sources(sentence: str, n_sources: int) -> tuple[int, ...]:
    """The 1-based source numbers a sentence cites, in order, without repeats or numbers out of range."""
    seen: list[int] = []
    for number in _numbers_in(sentence):
        if 1 <= number <= n_sources and number not in seen:
            seen.append(number)
    return tuple(seen)

