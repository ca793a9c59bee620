"""Plain data that flows through the engine: pages, chunks, hits, citations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageText:
    """The text of one PDF page. ``number`` is the physical 1-based page number."""

    number: int
    text: str


@dataclass(frozen=True)
class Chunk:
    """A passage to embed and retrieve; it remembers the file and the pages it came from."""

    doc_id: str
    file_name: str
    text: str
    page_start: int
    page_end: int
    ordinal: int  # position of the chunk in its document

    @property
    def pages(self) -> tuple[int, ...]:
        return tuple(range(self.page_start, self.page_end + 1))


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its relevance score (cosine similarity, higher is better)."""

    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Citation:
    """A source the answer used: the file and the pages (1-based) of the passage."""

    file_name: str
    pages: tuple[int, ...]

    def label(self) -> str:
        if len(self.pages) == 1:
            return f"{self.file_name}, p. {self.pages[0]}"
        return f"{self.file_name}, pp. {self.pages[0]}-{self.pages[-1]}"


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

    @property
    def embedder_identity(self) -> str:
        return f"{self.embedder or 'unknown'} ({self.dim or '?'} dimensions)"
