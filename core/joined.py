"""Several scope indexes searched as one (a thread and its channel) without copying them.

Each part keeps its own matrix and BM25 index, so a worker's memory holds every scope once however
many threads share a channel. Dense scores are exact cosines, so concatenating the parts' scores ranks
exactly as one merged matrix would; each part's BM25 scores come from its own corpus statistics, and
the fusion in :mod:`core.hybrid` takes the two rankings as it does for one scope.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from core.documents import Chunk, Hit
from core.index import ScopeIndex


class JoinedIndex:
    """The parts' chunks in order (rows numbered across parts), searched and read like one ScopeIndex."""

    def __init__(self, parts: list[ScopeIndex]):
        self.parts = [part for part in parts if part.chunks]
        self._offsets = np.cumsum([0] + [len(part.chunks) for part in self.parts])
        # A view, not a copy: a DM question joins hundreds of thousands of chunks and reads a handful.
        self.chunks: Sequence[Chunk] = _JoinedChunks(self)

    def _locate(self, row: int) -> tuple[ScopeIndex, int]:
        part = int(np.searchsorted(self._offsets, row, side="right")) - 1
        return self.parts[part], row - int(self._offsets[part])

    def vector(self, row: int) -> np.ndarray:
        """The unit vector of chunk ``row``."""
        part, local = self._locate(row)
        return part.vector(local)

    def row_of(self, doc_id: str, ordinal: int) -> int | None:
        """The row of a document's ``ordinal``-th chunk, or None when there is none."""
        for offset, part in zip(self._offsets.tolist(), self.parts, strict=False):
            row = part.row_of(doc_id, ordinal)
            if row is not None:
                return offset + row
        return None

    def hybrid_search(self, query_vector: np.ndarray, query: str, k: int, mode: str = "hybrid") -> list[Hit]:
        """Top-``k`` chunks over all parts, dense and BM25 rankings fused as for one scope."""
        from core.hybrid import hybrid_search

        if not self.chunks:
            return []
        dense = np.concatenate([part.vectors @ query_vector for part in self.parts])  # (n_chunks,)
        lexical = _JoinedLexical(self.parts) if mode != "dense" else None
        navigation = np.concatenate([part.navigation() for part in self.parts])
        return hybrid_search(self.chunks, dense, lexical, query, k, mode, navigation=navigation)


class _JoinedChunks(Sequence[Chunk]):
    """The parts' chunks in row order, looked up where they are."""

    def __init__(self, joined: JoinedIndex):
        self._joined = joined

    def __len__(self) -> int:
        return int(self._joined._offsets[-1])

    @overload
    def __getitem__(self, row: int) -> Chunk: ...

    @overload
    def __getitem__(self, row: slice) -> Sequence[Chunk]: ...

    def __getitem__(self, row: int | slice) -> Chunk | Sequence[Chunk]:
        if isinstance(row, slice):
            return list(self)[row]
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        part, local = self._joined._locate(row % len(self))
        return part.chunks[local]

    def __iter__(self) -> Iterator[Chunk]:
        return itertools.chain.from_iterable(part.chunks for part in self._joined.parts)


class _JoinedLexical:
    """Each part's BM25 scores, concatenated in row order."""

    def __init__(self, parts: list[ScopeIndex]):
        self.parts = parts

    def scores(self, query: str) -> np.ndarray:
        from core.hybrid import query_terms

        terms = query_terms(query)  # once: each part looks the same terms up in its own vocabulary
        return np.concatenate([part.lexical().scores_of_terms(terms) for part in self.parts])
