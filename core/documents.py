"""Plain data that flows through the engine: pages, chunks, hits, citations.

A PDF is read as pages. Other formats are read as *parts* that play the role of pages (a slide, a
section under a heading, a block of lines) and carry a ``label`` saying where they are ("slide 3",
"§ Installation", "lines 10-24"); a chunk's ``location`` is the label of the span it covers, and a
citation shows it instead of page numbers. PDF parts have no label, so PDF citations stay "p. N".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.text_safety import escape_name


@dataclass(frozen=True)
class PageText:
    """The text of one PDF page (``number`` is the physical 1-based page number), or one part of another
    format, numbered in order, with ``label`` saying where it is."""

    number: int
    text: str
    label: str = ""
    # Where in ``text`` each heading path begins: ((offset, "Title > Chapter > Section"), ...); see core.headings.
    sections: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A passage to embed and retrieve; it remembers the file and the pages it came from."""

    doc_id: str
    file_name: str
    text: str
    page_start: int
    page_end: int
    ordinal: int  # position of the chunk in its document
    location: str = ""  # where the passage is, for formats without pages ("slide 3"); "" for a PDF
    section: str = ""  # document title and heading path above the passage; embedded and indexed, not shown
    scope_key: str = ""  # the scope it was read from (set by the store); names its channel in a DM's citations

    def indexed_text(self) -> str:
        """What is embedded and indexed: the section path, then the passage."""
        return f"{self.section}\n{self.text}" if self.section else self.text

    @property
    def pages(self) -> tuple[int, ...]:
        return tuple(range(self.page_start, self.page_end + 1))


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its relevance score (cosine similarity, higher is better)."""

    chunk: Chunk
    score: float
    # The first stage's fused score (core.hybrid.fused_scores) that ranked it, where dense and BM25 were
    # summed; None otherwise. A second stage adds to it rather than discarding what BM25 found.
    fused: float | None = None
    # The cosine by a second stage's own embedder (core.rerank.SecondEmbedderReranker), where one re-scored
    # it; None otherwise. Judged against that embedder's own relevance floor, never against ``score``'s.
    second_score: float | None = None


@dataclass(frozen=True)
class Citation:
    """A source the answer used: the file and the pages (1-based) of the passage, or its location."""

    file_name: str
    pages: tuple[int, ...]
    location: str = ""  # shown instead of the pages when set: "slide 3", "§ Setup", a web page's URL
    scope_key: str = ""  # the scope the passage came from ("" when it is the conversation's own)
    channel: str = ""  # that scope's channel name, shown before the file ("finance"), set for DM questions

    @classmethod
    def of(cls, chunk: Chunk) -> Citation:
        return cls(chunk.file_name, chunk.pages, chunk.location, chunk.scope_key)

    def label(self) -> str:
        """How a person sees the source; the name's control characters escaped (documents stored before
        names were escaped at ingest still carry them)."""
        name = escape_name(self.file_name)
        if self.location:
            return f"{name}, {self.location}"
        if len(self.pages) == 1:
            return f"{name}, p. {self.pages[0]}"
        return f"{name}, pp. {self.pages[0]}-{self.pages[-1]}"


@dataclass(frozen=True)
class DocumentInfo:
    """A document indexed in a scope."""

    doc_id: str  # sha256 of the file's bytes
    file_name: str
    scope_key: str
    pages: int
    chunks: int
    added_at: float  # unix seconds
    added_by: str = ""
    embedder: str = ""  # the embedder that made its vectors (its configured name); "" in older records
    dim: int = 0  # their dimensions; 0 in older records
    unit: str = "page"  # what ``pages`` counts: page, slide, section, part
    source_url: str = ""  # a web page or PDF indexed from a link

    @property
    def embedder_identity(self) -> str:
        return f"{self.embedder or 'unknown'} ({self.dim or '?'} dimensions)"


_NUMBERED = re.compile(r"^(?P<word>[a-z]+?)s? (?P<first>\d+)(?:-(?P<last>\d+))?$")


def span_label(first: str, last: str) -> str:
    """The location of a passage running from part ``first`` to part ``last``.

    Numbered labels of one kind join into a range ("slide 2" .. "slide 4" -> "slides 2-4", "lines 3-7"
    .. "lines 9-12" -> "lines 3-12"); other labels (headings) join with "to".
    """
    if first == last:
        return first
    a, b = _NUMBERED.match(first), _NUMBERED.match(last)
    if a and b and a["word"] == b["word"]:
        return f"{a['word']}s {a['first']}-{b['last'] or b['first']}"
    return f"{first} to {last}"
