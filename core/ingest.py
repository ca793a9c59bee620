"""One shared file -> an indexed document in a scope.

The file is read page by page in a disposable child process (core/pdf_sandbox.py) and handled in
slices of ``IngestLimits.slice_pages`` pages: chunk, embed, report progress, then call
``between_slices``. Memory holds one slice of page text plus the document's chunks and vectors (which
are stored at the end, in one transaction, so a reader never sees half a document). The slice
boundary is where a worker can answer questions that arrived meanwhile, so a 3,500-page ingest does
not hold them up for longer than one slice takes to embed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.chunking import SECTION_RESERVE_TOKENS, Chunker
from core.documents import Chunk, DocumentInfo, PageText
from core.embedding import Embedder
from core.index import DocumentStore
from core.pdf import DocumentError
from core.pdf_sandbox import ParseLimits, SandboxedPdf

# progress(done, total, what): called as work advances, e.g. (40, 120, "reading and indexing pages")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int
    max_pages: int
    chunk_tokens: int
    overlap_tokens: int
    parse_timeout_s: float = 600.0
    parse_memory_mb: int = 1024
    max_text_chars: int = 50_000_000
    ocr: bool = True
    slice_pages: int = 32  # pages read, chunked and embedded per step; bounds memory and the pause gap
    section_context: bool = False  # embed and index each chunk with its title and heading path

    def parse_limits(self) -> ParseLimits:
        return ParseLimits(max_pages=self.max_pages, timeout_s=self.parse_timeout_s,
                           max_memory_mb=self.parse_memory_mb, max_text_chars=self.max_text_chars, ocr=self.ocr)


@dataclass(frozen=True)
class IngestResult:
    info: DocumentInfo
    already_indexed: bool  # the same bytes were indexed in this scope before; nothing was redone
    notes: tuple[str, ...] = ()  # what a person should know about the file: repaired, OCR, unreadable pages

    def summary(self) -> str:
        info = self.info
        if self.already_indexed:
            return (f"{info.file_name} is already indexed here ({info.pages} pages, {info.chunks} passages); "
                    "reusing the stored index, nothing re-embedded.")
        text = f"Indexed {info.file_name}: {info.pages} pages, {info.chunks} passages."
        return " ".join([text, *self.notes])


def document_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ingest_pdf(data: bytes, file_name: str, scope_key: str, embedder: Embedder, store: DocumentStore,
               limits: IngestLimits, user: str = "", progress: Progress | None = None,
               between_slices: Callable[[], None] | None = None) -> IngestResult:
    """Parse, chunk, embed and store ``data``; a file already indexed in the scope is not redone.

    The PDF is read in a disposable child process (:mod:`core.pdf_sandbox`) and handled
    ``limits.slice_pages`` pages at a time, so memory stays flat however long the file is.
    ``between_slices`` runs after each slice: a worker can answer waiting questions there.
    """
    report = progress or (lambda done, total, what: None)
    if len(data) > limits.max_bytes:
        raise DocumentError(f"{file_name} is {len(data) / 1e6:.1f} MB; the limit is "
                            f"{limits.max_bytes / 1e6:.0f} MB.")
    doc_id = document_id(data)
    known = store.get_document(scope_key, doc_id)
    if known is not None:
        return IngestResult(known, already_indexed=True)

    import numpy as np

    # The section path is embedded with each chunk (core/headings.py); leave it room in the window.
    reserve = SECTION_RESERVE_TOKENS if limits.section_context else 0
    max_tokens = min(limits.chunk_tokens, embedder.max_tokens - reserve)
    chunker = Chunker(doc_id, file_name, embedder.count_tokens, max_tokens,
                      min(limits.overlap_tokens, max_tokens // 2))
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []

    def embed(new: list[Chunk]) -> None:
        if new:
            chunks.extend(new)
            vectors.append(embedder.embed([c.indexed_text() for c in new]))

    with SandboxedPdf(data, file_name, limits.parse_limits()) as pdf:
        total = pdf.page_count
        report(0, total, "reading pages")
        batch: list[PageText] = []
        for page in pdf.pages():
            batch.append(page if limits.section_context else PageText(page.number, page.text))
            if len(batch) >= limits.slice_pages:
                embed(chunker.add(batch))
                report(page.number, total, "reading and indexing pages")
                batch = []
                if between_slices is not None:
                    between_slices()
        embed(chunker.add(batch) + chunker.finish())
        notes = _notes(pdf)
    if not chunks:
        raise DocumentError(f"{file_name} gave no text to index.")
    info = DocumentInfo(doc_id=doc_id, file_name=file_name, scope_key=scope_key, pages=total,
                        chunks=len(chunks), added_at=time.time(), added_by=user)
    store.add_document(info, chunks, np.vstack(vectors))
    report(total, total, "done")
    return IngestResult(info, already_indexed=False, notes=notes)


def _notes(pdf: SandboxedPdf) -> tuple[str, ...]:
    notes = []
    if pdf.is_repaired:
        notes.append("The file was damaged and has been repaired while reading; some text may be missing.")
    if pdf.ocr_pages:
        notes.append(f"Read by text recognition (OCR): {_page_list(pdf.ocr_pages)}.")
    if pdf.unreadable_pages:
        why = "" if pdf.has_ocr else " (scanned images; OCR is not installed here)"
        notes.append(f"No text could be read from {_page_list(pdf.unreadable_pages)}{why}.")
    return tuple(notes)


def _page_list(pages: list[int], most: int = 15) -> str:
    shown = ", ".join(str(p) for p in pages[:most])
    more = f" and {len(pages) - most} more" if len(pages) > most else ""
    word = "page" if len(pages) == 1 else "pages"
    return f"{word} {shown}{more}"
