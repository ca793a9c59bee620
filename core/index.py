"""Exact dense search over one scope's chunk matrix, and the DocumentStore port that feeds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.documents import Chunk, DocumentInfo, Hit


@dataclass
class ScopeIndex:
    """Everything searchable in one scope: chunks and their unit vectors, row for row."""

    chunks: list[Chunk]
    vectors: np.ndarray  # (n_chunks, dim) float32, unit length

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """Top-``k`` chunks by cosine similarity. Exact: a matrix-vector product over the scope."""
        if not self.chunks:
            return []
        scores = self.vectors @ query  # (n_chunks,)
        k = min(k, len(self.chunks))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [Hit(self.chunks[i], float(scores[i])) for i in top]

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
