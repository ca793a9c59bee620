"""Section context: the document's title and the heading path above each passage.

A question often names the topic ("how do I read a spreadsheet") while the passage only names the
details; the headings above it name the topic. Headings come from the PDF's outline (bookmarks) when it
has one, else from font sizes: a short line set clearly larger than the body text is a heading, and a
larger one is a higher level. The path is stored next to the passage and prepended only to what is
embedded and indexed, so the text shown to a model and quoted to people stays clean.

Works a page at a time (pages stream through the PDF sandbox), so memory stays flat.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pymupdf

SEPARATOR = " > "
MAX_TITLE_CHARS = 80  # one heading; a longer 'heading' is a paragraph set in a large font
MAX_PATH_CHARS = 160  # the whole path, about 40 embedder tokens: the passage keeps most of the window
HEADING_SIZE_RATIO = 1.12  # a line at least this much larger than the body text is a heading
BODY_SAMPLE_PAGES = 40  # pages sampled to find the body font size
_JUNK_TITLE = re.compile(r"^(microsoft (word|powerpoint) - |untitled)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class HeadingLine:
    """A heading found on a page: its text and its rank (larger is more senior: a font size, or minus
    the outline level)."""

    text: str
    rank: float


def document_title(metadata: dict[str, Any] | None, file_name: str) -> str:
    """The PDF's own title when it has a real one, else the file name without extension."""
    title = _clean((metadata or {}).get("title") or "")
    title = _JUNK_TITLE.sub("", title).strip()
    if len(title) >= 3:
        return title[:MAX_TITLE_CHARS]
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    return _clean(stem.replace("_", " ").replace("-", " "))[:MAX_TITLE_CHARS]


def outline_by_page(document: pymupdf.Document) -> dict[int, list[HeadingLine]]:
    """The outline's entries grouped by their 1-based page, in outline order; {} when there is none."""
    try:
        toc = document.get_toc(simple=True)
    except Exception:  # a broken outline must not stop the text from being read
        return {}
    pages: dict[int, list[HeadingLine]] = {}
    for level, title, page in toc:
        text = _clean(str(title))
        if text and int(page) >= 1:
            pages.setdefault(int(page), []).append(HeadingLine(text[:MAX_TITLE_CHARS], -float(level)))
    return pages


def body_font_size(document: pymupdf.Document, sample_pages: int = BODY_SAMPLE_PAGES) -> float:
    """The font size most characters are set in, from up to ``sample_pages`` pages spread over the file."""
    count = document.page_count
    step = max(1, count // sample_pages)
    sizes: Counter[float] = Counter()
    for index in range(0, count, step):
        for size, text in _lines(document, index):
            sizes[size] += len(text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def font_headings(document: pymupdf.Document, index: int, body_size: float) -> list[HeadingLine]:
    """Lines of page ``index`` (0-based) set clearly larger than ``body_size``, in reading order.
    Consecutive lines of the same size are one heading wrapped over lines."""
    if body_size <= 0:
        return []
    found: list[HeadingLine] = []
    previous_size = 0.0
    for size, text in _lines(document, index):
        is_heading = size >= body_size * HEADING_SIZE_RATIO and any(c.isalpha() for c in text)
        if not is_heading:
            previous_size = 0.0
            continue
        if found and size == previous_size and len(found[-1].text) + len(text) < MAX_TITLE_CHARS:
            found[-1] = HeadingLine(f"{found[-1].text} {text}", size)
        elif len(text) <= MAX_TITLE_CHARS:
            found.append(HeadingLine(text, size))
        previous_size = size
    return found


def _lines(document: pymupdf.Document, index: int) -> list[tuple[float, str]]:
    """(font size, text) of each text line on page ``index``; size is that of the line's longest span."""
    try:
        blocks = document.load_page(index).get_text("dict")["blocks"]
    except Exception:
        return []
    lines = []
    for block in blocks:
        for line in block.get("lines", ()):
            spans = [s for s in line.get("spans", ()) if s.get("text", "").strip()]
            if not spans:
                continue
            text = _clean(" ".join(s["text"] for s in spans))
            size = round(float(max(spans, key=lambda s: len(s["text"]))["size"]), 1)
            if text:
                lines.append((size, text))
    return lines


@dataclass
class SectionTracker:
    """Follows the heading path from page to page. For each page it says where in the page's cleaned
    text a new path begins: ``((offset, path), ...)``, the first at offset 0 (the path carried over)."""

    title: str
    _stack: list[HeadingLine] = field(default_factory=list)

    def path(self) -> str:
        parts = [self.title] if self.title else []
        for heading in self._stack:
            if not parts or heading.text.lower() != parts[-1].lower():
                parts.append(heading.text)
        return fit_path(parts)

    def page(self, text: str, headings: Sequence[HeadingLine]) -> tuple[tuple[int, str], ...]:
        """Sections of one page's ``text`` given the headings found on it, in reading order. A heading
        that does not occur in the cleaned text (a running header removed by cleaning) is ignored."""
        sections = [(0, self.path())]
        position = 0
        folded = text.lower()
        for heading in headings:
            at = folded.find(heading.text.lower(), position)
            if at < 0:
                continue
            while self._stack and self._stack[-1].rank <= heading.rank:
                self._stack.pop()
            self._stack.append(heading)
            position = at
            if sections[-1][0] == at:
                sections[-1] = (at, self.path())
            else:
                sections.append((at, self.path()))
        return tuple(sections)


def fit_path(parts: list[str]) -> str:
    """Join the title and headings; when too long, drop middle levels first (title and nearest stay)."""
    parts = list(parts)
    while len(parts) > 2 and len(SEPARATOR.join(parts)) > MAX_PATH_CHARS:
        parts.pop(1)
    return SEPARATOR.join(parts)[:MAX_PATH_CHARS]


def section_at(sections: Sequence[tuple[int, str]], offset: int) -> str:
    """The path in force at character ``offset`` of a page, given that page's ``sections``."""
    current = ""
    for start, path in sections:
        if start > offset:
            break
        current = path
    return current


def _clean(text: str) -> str:
    """The same normalisation page text gets (core.pdf.clean_text), so headings can be found in it."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()
