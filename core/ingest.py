"""One shared file (PDF, Word, PowerPoint, Markdown, text, HTML) -> an indexed document in a scope.

The file is read page by page (other formats: part by part) in a disposable child process
(core/pdf_sandbox.py) and handled in slices of ``IngestLimits.slice_pages`` pages: chunk, embed, report
progress, then call ``between_slices``. Memory holds one slice of page text plus the document's chunks and
vectors (which are stored at the end, in one transaction, so a reader never sees half a document). The slice
boundary is where a worker can answer questions that arrived meanwhile, so a 3,500-page ingest does
not hold them up for longer than one slice takes to embed.

With a :class:`ProgressStore`, each embedded slice is also saved as it completes, and the ingest can
stop between slices (``should_stop``) by raising :class:`IngestInterrupted`: whoever runs it next
(another worker, after a restart) starts after the last saved slice instead of embedding it again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.chunking import SECTION_RESERVE_TOKENS, SELF_CONTAINED_UNITS, Chunker
from core.documents import Chunk, DocumentInfo, PageText
from core.embedding import Embedder
from core.formats import detect_kind
from core.index import DocumentStore
from core.pdf import DocumentError
from core.pdf_sandbox import ParseLimits, SandboxedPdf
from core.text_safety import escape_name

if TYPE_CHECKING:
    import numpy as np

# progress(done, total, what): called as work advances, e.g. (40, 120, "reading and indexing pages")
Progress = Callable[[int, int, str], None]


@dataclass
class SavedProgress:
    """An ingest's work so far: pages done, their chunks and vectors, and the chunker's open chunk."""

    pages_done: int
    chunker: dict[str, Any]
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)


class ProgressStore(Protocol):
    """Where an ingest keeps its finished slices until the document is stored whole."""

    def load(self, scope_key: str, doc_id: str) -> SavedProgress | None: ...

    def save(self, scope_key: str, doc_id: str, pages_done: int, chunker: dict[str, Any], new_chunks: list[Chunk],
             new_vectors: np.ndarray | None) -> bool:
        """Append one slice's work; False, with nothing saved, when this ingest may no longer write
        (another worker took the job over)."""
        ...

    def clear(self, scope_key: str, doc_id: str) -> None: ...


class IngestInterrupted(Exception):
    """The ingest stopped between slices, its work so far saved; running it again resumes there."""

    def __init__(self, pages_done: int, total: int, lost: bool = False):
        super().__init__(f"ingest stopped after {pages_done} of {total} pages")
        self.pages_done = pages_done
        self.total = total
        self.lost = lost  # the progress could not be saved: another worker holds the job now


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int
    max_pages: int
    chunk_tokens: int
    overlap_tokens: int
    parse_timeout_s: float = 600.0
    parse_ocr_page_s: float = 60.0  # added to parse_timeout_s for each scanned page recognised
    parse_memory_mb: int = 2048
    max_text_chars: int = 50_000_000
    ocr: bool = True
    ocr_engine: str = "rapidocr"
    max_unpacked_bytes: int = 200_000_000
    slice_pages: int = 32  # pages read, chunked and embedded per step; bounds memory and the pause gap
    section_context: bool = False  # embed and index each chunk with its title and heading path

    def parse_limits(self) -> ParseLimits:
        return ParseLimits(max_pages=self.max_pages, timeout_s=self.parse_timeout_s, ocr_page_s=self.parse_ocr_page_s,
                           max_memory_mb=self.parse_memory_mb, max_text_chars=self.max_text_chars, ocr=self.ocr,
                           ocr_engine=self.ocr_engine, max_unpacked_bytes=self.max_unpacked_bytes)


@dataclass(frozen=True)
class IngestResult:
    info: DocumentInfo
    already_indexed: bool  # the same bytes were indexed in this scope before; nothing was redone
    notes: tuple[str, ...] = ()  # what a person should know about the file: repaired, OCR, unreadable pages
    embedded: int = 0  # passages this run embedded
    resumed: int = 0  # passages an earlier, interrupted run had embedded and saved

    def summary(self) -> str:
        info = self.info
        parts = f"{_count(info.pages, info.unit)}, {_count(info.chunks, 'passage')}"
        if self.already_indexed:
            return (f"{info.file_name} is already indexed here ({parts}); "
                    "reusing the stored index, nothing re-embedded.")
        text = f"Indexed {info.file_name}: {parts}."
        return " ".join([text, *self.notes])


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def document_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ingest_document(data: bytes, file_name: str, scope_key: str, embedder: Embedder, store: DocumentStore,
                    limits: IngestLimits, user: str = "", progress: Progress | None = None,
                    between_slices: Callable[[], None] | None = None, kind: str | None = None,
                    source_url: str = "", saved: ProgressStore | None = None,
                    should_stop: Callable[[], bool] | None = None) -> IngestResult:
    """Parse, chunk, embed and store ``data``; a file already indexed in the scope is not redone.

    ``kind`` (a key of :data:`core.formats.KINDS`) is detected from the name and bytes when not given;
    ``source_url`` marks a page fetched from a link: its title names it and its URL is cited.
    The file is read in a disposable child process (:mod:`core.pdf_sandbox`) and handled
    ``limits.slice_pages`` pages at a time, so memory stays flat however long the file is.
    ``between_slices`` runs after each slice: a worker can answer waiting questions there. With
    ``saved``, each slice's work is kept there and an earlier run's is picked up; ``should_stop``,
    asked after each slice, ends the ingest with :class:`IngestInterrupted`.
    """
    report = progress or (lambda done, total, what: None)
    file_name = escape_name(file_name)  # stored so: every surface (replies, /docs, sources) shows it escaped
    if len(data) > limits.max_bytes:
        raise DocumentError(f"{file_name} is {len(data) / 1e6:.1f} MB; the limit is "
                            f"{limits.max_bytes / 1e6:.0f} MB.")
    if not data:
        raise DocumentError(f"{file_name} is empty (0 bytes).")
    kind = kind or detect_kind(data, file_name)
    doc_id = document_id(data)
    known = store.get_document(scope_key, doc_id)
    if known is not None:
        if saved is not None:
            saved.clear(scope_key, doc_id)
        return IngestResult(known, already_indexed=True)

    import numpy as np

    # The section path is embedded with each chunk (core/headings.py); leave it room in the window.
    reserve = SECTION_RESERVE_TOKENS if limits.section_context else 0
    max_tokens = min(limits.chunk_tokens, embedder.max_tokens - reserve)
    resumed = saved.load(scope_key, doc_id) if saved is not None else None
    pages_done = 0
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    if resumed is not None:
        pages_done, chunks, vectors = resumed.pages_done, list(resumed.chunks), list(resumed.vectors)

    embedded = 0

    def embed(new: list[Chunk], last_page: int) -> None:
        nonlocal embedded
        matrix = embedder.embed([c.indexed_text() for c in new]) if new else None
        embedded += len(new)
        if saved is not None and not saved.save(scope_key, doc_id, last_page, chunker.state(), new, matrix):
            raise IngestInterrupted(pages_done, total, lost=True)
        chunks.extend(new)
        if matrix is not None:
            vectors.append(matrix)

    with SandboxedPdf(data, file_name, limits.parse_limits(), kind=kind, source_url=source_url) as pdf:
        total = pdf.page_count
        if source_url:  # a linked page is named by its title and URL (a web page's parts cite the URL)
            file_name = f"{pdf.title or file_name} ({source_url})" if kind == "pdf" else pdf.title or source_url
        chunker = Chunker(doc_id, file_name, embedder.count_tokens, max_tokens,
                          min(limits.overlap_tokens, max_tokens // 2), break_at_parts=pdf.unit in SELF_CONTAINED_UNITS)
        if resumed is not None:
            chunker.restore(resumed.chunker)
        report(pages_done, total,
               f"resuming after the {pdf.unit}s already read" if pages_done else f"reading {pdf.unit}s")
        batch: list[PageText] = []
        for page in pdf.pages():
            if page.number <= pages_done:
                continue  # read and embedded by an earlier run; its chunks are in ``saved``
            batch.append(page if limits.section_context else PageText(page.number, page.text, page.label))
            if pdf.ocr_pages[-1:] == [page.number]:  # recognising a page takes seconds: show each one
                report(page.number, total, "recognising scanned pages (OCR)")
            if len(batch) >= limits.slice_pages:
                embed(chunker.add(batch), page.number)
                pages_done = page.number
                report(page.number, total, f"reading and indexing {pdf.unit}s")
                batch = []
                if between_slices is not None:
                    between_slices()
                if should_stop is not None and should_stop() and pages_done < total:
                    raise IngestInterrupted(pages_done, total)
        new = chunker.add(batch) + chunker.finish()
        if new:
            vectors.append(embedder.embed([c.text for c in new]))
            embedded += len(new)
            chunks.extend(new)
        notes = _notes(pdf)
    if not chunks:
        raise DocumentError(f"{file_name} gave no text to index.")
    info = DocumentInfo(doc_id=doc_id, file_name=file_name, scope_key=scope_key, pages=total,
                        chunks=len(chunks), added_at=time.time(), added_by=user, embedder=embedder.name,
                        dim=embedder.dim, unit=pdf.unit, source_url=source_url)
    store.add_document(info, chunks, np.vstack(vectors))
    if saved is not None:
        saved.clear(scope_key, doc_id)
    report(total, total, "done")
    return IngestResult(info, already_indexed=False, notes=notes, embedded=embedded,
                        resumed=len(chunks) - embedded)


def _notes(pdf: SandboxedPdf) -> tuple[str, ...]:
    notes = []
    if pdf.is_repaired:
        notes.append("The file was damaged and has been repaired while reading; some text may be missing.")
    if pdf.ocr_pages:
        notes.append(f"{len(pdf.ocr_pages)} scanned {'page was' if len(pdf.ocr_pages) == 1 else 'pages were'} "
                     f"read by text recognition (OCR): {_page_list(pdf.ocr_pages)}.")
    notes.extend(pdf.dropped)
    if pdf.unreadable_pages:
        why = "" if pdf.has_ocr else " (scanned images; OCR is not installed here)"
        notes.append(f"No text could be read from {_page_list(pdf.unreadable_pages)}{why}.")
    return tuple(notes)


def _page_list(pages: list[int], most: int = 15) -> str:
    shown = ", ".join(str(p) for p in pages[:most])
    more = f" and {len(pages) - most} more" if len(pages) > most else ""
    word = "page" if len(pages) == 1 else "pages"
    return f"{word} {shown}{more}"
