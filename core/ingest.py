"""One shared file -> an indexed document in a scope."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.chunking import chunk_pages
from core.documents import DocumentInfo
from core.embedding import Embedder
from core.index import DocumentStore
from core.pdf import DocumentError, extract_pages

# progress(done, total, what): called as work advances, e.g. (40, 120, "embedding passages")
Progress = Callable[[int, int, str], None]
EMBED_BATCH = 256  # passages per progress step while embedding


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int
    max_pages: int
    chunk_tokens: int
    overlap_tokens: int


@dataclass(frozen=True)
class IngestResult:
    info: DocumentInfo
    already_indexed: bool  # the same bytes were indexed in this scope before; nothing was redone

    def summary(self) -> str:
        info = self.info
        if self.already_indexed:
            return (f"{info.file_name} is already indexed here ({info.pages} pages, {info.chunks} passages); "
                    "reusing the stored index.")
        return f"Indexed {info.file_name}: {info.pages} pages, {info.chunks} passages."


def document_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ingest_pdf(data: bytes, file_name: str, scope_key: str, embedder: Embedder, store: DocumentStore,
               limits: IngestLimits, user: str = "", progress: Progress | None = None) -> IngestResult:
    """Parse, chunk, embed and store ``data``; a file already indexed in the scope is not redone."""
    report = progress or (lambda done, total, what: None)
    if len(data) > limits.max_bytes:
        raise DocumentError(f"{file_name} is {len(data) / 1e6:.1f} MB; the limit is "
                            f"{limits.max_bytes / 1e6:.0f} MB.")
    doc_id = document_id(data)
    known = store.get_document(scope_key, doc_id)
    if known is not None:
        return IngestResult(known, already_indexed=True)

    pages = extract_pages(data, file_name, max_pages=limits.max_pages)
    report(0, len(pages), "reading pages")
    max_tokens = min(limits.chunk_tokens, embedder.max_tokens)
    chunks = chunk_pages(pages, doc_id, file_name, embedder.count_tokens, max_tokens,
                         min(limits.overlap_tokens, max_tokens // 2))
    if not chunks:
        raise DocumentError(f"{file_name} gave no text to index.")
    vectors = []
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = chunks[start:start + EMBED_BATCH]
        vectors.append(embedder.embed([c.text for c in batch]))
        report(batch[-1].page_end, len(pages), "embedding passages")
    import numpy as np

    info = DocumentInfo(doc_id=doc_id, file_name=file_name, scope_key=scope_key, pages=len(pages),
                        chunks=len(chunks), added_at=time.time(), added_by=user)
    store.add_document(info, chunks, np.vstack(vectors))
    report(len(pages), len(pages), "done")
    return IngestResult(info, already_indexed=False)
