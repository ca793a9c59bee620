"""Exact dense search over one scope's chunk matrix, and the DocumentStore port that feeds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.documents import Chunk, DocumentInfo, Hit

if TYPE_CHECKING:
    from core.hybrid import LexicalIndex


@dataclass
class ScopeIndex:
    """Everything searchable in one scope: chunks and their unit vectors, row for row."""

    chunks: list[Chunk]
    vectors: np.ndarray  # (n_chunks, dim) float32, unit length
    _lexical: LexicalIndex | None = field(default=None, init=False, repr=False, compare=False)
    _rows: dict[tuple[str, int], int] | None = field(default=None, init=False, repr=False, compare=False)

    def row_of(self, doc_id: str, ordinal: int) -> int | None:
        """The row of a document's ``ordinal``-th chunk, or None when there is none."""
        if self._rows is None:
            self._rows = {(c.doc_id, c.ordinal): row for row, c in enumerate(self.chunks)}
        return self._rows.get((doc_id, ordinal))

    def lexical(self) -> LexicalIndex:
        """The BM25 index over the same chunks, built on first use and kept with this index."""
        if self._lexical is None:
            from core.hybrid import LexicalIndex

            self._lexical = LexicalIndex([c.indexed_text() for c in self.chunks])
        return self._lexical

    def hybrid_search(self, query_vector: np.ndarray, query: str, k: int, mode: str = "hybrid") -> list[Hit]:
        """Top-``k`` chunks by dense cosine and BM25 fused (see :mod:`core.hybrid`); exact on both sides."""
        from core.hybrid import hybrid_search

        if not self.chunks:
            return []
        dense = self.vectors @ query_vector  # (n_chunks,)
        lexical = self.lexical() if mode != "dense" else None
        return hybrid_search(self.chunks, dense, lexical, query, k, mode)

    @staticmethod
    def merge(indexes: list[ScopeIndex], dim: int) -> ScopeIndex:
        chunks = [c for index in indexes for c in index.chunks]
        matrices = [index.vectors for index in indexes if len(index.chunks)]
        vectors = np.vstack(matrices) if matrices else np.zeros((0, dim), dtype=np.float32)
        return ScopeIndex(chunks, vectors)


class DocumentStore(Protocol):
    """Where indexed documents live (Redis in production: workers/store.py)."""

    def get_document(self, scope_key: str, doc_id: str) -> DocumentInfo | None: ...

    def add_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> None: ...

    def list_documents(self, scope_keys: list[str]) -> list[DocumentInfo]: ...

    def forget(self, scope_key: str, doc_id: str) -> bool: ...

    def load_index(self, scope_key: str, dim: int) -> ScopeIndex: ...
