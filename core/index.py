"""Exact dense search over one scope's chunk matrix, and the DocumentStore port that feeds it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.documents import Chunk, DocumentInfo, Hit

if TYPE_CHECKING:
    from core.hybrid import LexicalIndex

# Estimates for what the interpreter holds beside the arrays, so a cache of indexes can be bounded in
# bytes: a (doc_id, ordinal) -> row entry, and one vocabulary word as the BM25 tokenizer and index keep it
# (four dicts: word -> id, word -> stem, stem -> id, token -> column).
ROW_ENTRY_BYTES = 150
VOCABULARY_WORD_BYTES = 4 * 110
LEXICAL_BYTES_PER_WORD = 8  # a float32 score and an int32 column per (chunk, distinct word)


class EmbedderMismatchError(Exception):
    """A scope's vectors came from another embedder than the one loaded: searching them would be wrong."""

    def __init__(self, scope_key: str, stored: str, loaded: str):
        self.scope_key = scope_key
        super().__init__(
            f"The documents in {scope_key} were indexed with the embedder {stored}, but this worker uses "
            f"{loaded}; their vectors cannot be compared. An operator can re-embed them with "
            f"`phobos reindex --scope {scope_key}` (or `phobos reindex --all`).")


@dataclass
class ScopeIndex:
    """Everything searchable in one scope: chunks and their unit vectors, row for row."""

    chunks: list[Chunk]
    vectors: np.ndarray  # (n_chunks, dim) float32, unit length
    _lexical: LexicalIndex | None = field(default=None, init=False, repr=False, compare=False)
    _rows: dict[tuple[str, int], int] | None = field(default=None, init=False, repr=False, compare=False)
    _sizes: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    _navigation: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def row_of(self, doc_id: str, ordinal: int) -> int | None:
        """The row of a document's ``ordinal``-th chunk, or None when there is none."""
        if self._rows is None:
            self._rows = {(c.doc_id, c.ordinal): row for row, c in enumerate(self.chunks)}
        return self._rows.get((doc_id, ordinal))

    def vector(self, row: int) -> np.ndarray:
        """The unit vector of chunk ``row``."""
        return self.vectors[row]

    def nbytes(self) -> int:
        """Memory this index holds: vectors, chunk objects and texts, row lookup, and BM25 (measured once
        built, estimated from the texts' words before)."""
        if self._sizes is None:
            self._sizes = (self._fixed_nbytes(), self._lexical_estimate())
        lexical = self._lexical.nbytes(VOCABULARY_WORD_BYTES) if self._lexical is not None else self._sizes[1]
        return self._sizes[0] + lexical

    def _fixed_nbytes(self) -> int:
        chunks = sum(sys.getsizeof(c) + sys.getsizeof(c.__dict__) + sys.getsizeof(c.text) + 8
                     for c in self.chunks)
        return int(self.vectors.nbytes) + chunks + ROW_ENTRY_BYTES * len(self.chunks)

    def _lexical_estimate(self) -> int:
        words = [set(c.text.lower().split()) for c in self.chunks]
        vocabulary = len(set().union(*words)) if words else 0
        return LEXICAL_BYTES_PER_WORD * sum(len(w) for w in words) + VOCABULARY_WORD_BYTES * vocabulary

    def lexical(self) -> LexicalIndex:
        """The BM25 index over the same chunks, built on first use and kept with this index."""
        if self._lexical is None:
            from core.hybrid import LexicalIndex

            self._lexical = LexicalIndex([c.indexed_text() for c in self.chunks])
        return self._lexical

    def navigation(self) -> np.ndarray:
        """Which chunks are tables of contents or indexes (core.navigation), computed once per index."""
        if self._navigation is None:
            from core.navigation import navigation_mask

            self._navigation = navigation_mask([c.text for c in self.chunks])
        return self._navigation

    def hybrid_search(self, query_vector: np.ndarray, query: str, k: int, mode: str = "hybrid") -> list[Hit]:
        """Top-``k`` chunks by dense cosine and BM25 fused (see :mod:`core.hybrid`); exact on both sides."""
        from core.hybrid import hybrid_search

        if not self.chunks:
            return []
        dense = self.vectors @ query_vector  # (n_chunks,)
        lexical = self.lexical() if mode != "dense" else None
        return hybrid_search(self.chunks, dense, lexical, query, k, mode, navigation=self.navigation())


class SearchIndex(Protocol):
    """What answering reads from: one scope's :class:`ScopeIndex`, or several joined (core/joined.py)."""

    @property
    def chunks(self) -> Sequence[Chunk]: ...

    def row_of(self, doc_id: str, ordinal: int) -> int | None: ...

    def vector(self, row: int) -> np.ndarray: ...

    def hybrid_search(self, query_vector: np.ndarray, query: str, k: int, mode: str = "hybrid") -> list[Hit]: ...


class DocumentStore(Protocol):
    """Where indexed documents live (Redis in production: workers/store.py)."""

    def get_document(self, scope_key: str, doc_id: str) -> DocumentInfo | None: ...

    def add_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> None: ...

    def list_documents(self, scope_keys: list[str]) -> list[DocumentInfo]: ...

    def forget(self, scope_key: str, doc_id: str) -> bool: ...

    def load_index(self, scope_key: str, dim: int, embedder_name: str = "") -> ScopeIndex:
        """The scope's index; raises :class:`EmbedderMismatchError` when its vectors came from another
        embedder than ``embedder_name`` with ``dim`` dimensions."""
        ...

    def load_indexes(self, scope_keys: list[str], dim: int, embedder_name: str = "") -> list[ScopeIndex]:
        """:meth:`load_index` for several scopes at once, in order (a DM question reads hundreds)."""
        ...
