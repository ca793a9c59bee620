"""Remove running headers, footers and page numbers: lines that repeat near the top or bottom of pages.

Works on a sliding window of pages so a 3,500-page document streams through in flat memory: a line
among the first or last few lines of a page is dropped when (with digits ignored) it also sits near
the edge of enough of the neighbouring pages, or when it is a bare page number.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

EDGE_LINES = 3  # how many lines at the top and at the bottom of a page may be a header or footer
WINDOW_PAGES = 6  # neighbours on each side a line is compared with
MIN_REPEAT_SHARE = 0.5  # share of the neighbouring pages that must repeat the line
MIN_NEIGHBOURS = 2  # pages shorter than this cannot tell a header from text

_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_PAGE_NUMBER = re.compile(r"^(page\s+)?([0-9]{1,5}|[ivxlcdm]{1,7})(\s*(/|of)\s*[0-9]{1,5})?$|^[-–—]\s*\d{1,5}\s*[-–—]$",
                          re.IGNORECASE)


@dataclass(frozen=True)
class RawPage:
    """One page's text as lines, before cleaning. ``number`` is the physical 1-based page number."""

    number: int
    lines: list[str]


def edge_signature(line: str) -> str:
    """What makes two header lines 'the same': case, spacing and digits (page numbers) ignored."""
    return _DIGITS.sub("#", _SPACE.sub(" ", line).strip().lower())


def is_page_number(line: str) -> bool:
    return bool(_PAGE_NUMBER.match(line.strip()))


def _edges(page: RawPage) -> set[str]:
    content = [line for line in page.lines if line.strip()]
    edge = content[:EDGE_LINES] + content[-EDGE_LINES:]
    return {edge_signature(line) for line in edge}


def strip_running_lines(pages: Iterable[RawPage]) -> Iterator[RawPage]:
    """Yield each page with its running headers, footers and page numbers removed, in order."""
    window: deque[tuple[RawPage, set[str]]] = deque()
    pending = 0  # index in ``window`` of the next page to emit
    for page in pages:
        window.append((page, _edges(page)))
        # A page is emitted once WINDOW_PAGES pages after it have been seen.
        while len(window) - 1 - pending >= WINDOW_PAGES:
            yield _clean_page(window, pending)
            pending += 1
            if pending > WINDOW_PAGES:
                window.popleft()
                pending -= 1
    while pending < len(window):
        yield _clean_page(window, pending)
        pending += 1


def _clean_page(window: deque[tuple[RawPage, set[str]]], position: int) -> RawPage:
    page, _ = window[position]
    neighbours = [edges for i, (_, edges) in enumerate(window) if i != position]
    content_indexes = [i for i, line in enumerate(page.lines) if line.strip()]
    edge_indexes = set(content_indexes[:EDGE_LINES] + content_indexes[-EDGE_LINES:])
    kept = []
    for i, line in enumerate(page.lines):
        if i in edge_indexes and (is_page_number(line) or _repeats(line, neighbours)):
            continue
        kept.append(line)
    return RawPage(page.number, kept)


def _repeats(line: str, neighbours: list[set[str]]) -> bool:
    if len(neighbours) < MIN_NEIGHBOURS:
        return False
    signature = edge_signature(line)
    if len(signature) < 3:
        return False
    seen = sum(1 for edges in neighbours if signature in edges)
    return seen >= max(2, MIN_REPEAT_SHARE * len(neighbours))
