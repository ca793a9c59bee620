"""Second-stage rerankers: re-order the first stage's top candidates with a closer look at each.

A cross-encoder reads the question and a passage together, so it sees how they relate rather than
comparing two separate vectors; it is too slow to run over a whole scope but fine over 30-50
candidates. No cross-encoder ships in a package, so the offline one re-scores sub-passages densely:
each candidate is split into ~100-token units, embedded with the question's embedder, and ranked by
its best unit, fused with the first-stage order.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.documents import Hit
from core.embedding import Embedder
from core.hybrid import reciprocal_rank_fusion
from core.units import UNIT_TOKENS, matching_units

RERANK_CANDIDATES = 40  # first-stage hits a reranker looks at


class Reranker(Protocol):
    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` (first-stage order, best first) in the reranker's order. Scores stay cosines."""
        ...


class SubPassageReranker:
    """Dense re-scoring of sub-passages: a candidate ranks by its best ~100-token unit's cosine,
    fused by reciprocal rank with the first-stage order (the units alone lose the passage's context)."""

    def __init__(self, embedder: Embedder, unit_tokens: int = UNIT_TOKENS):
        self.embedder = embedder
        self.unit_tokens = unit_tokens

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        if len(hits) < 2:
            return list(hits)
        chunks = [hit.chunk for hit in hits]
        texts, parents = matching_units(chunks, self.embedder.count_tokens, self.unit_tokens)
        vectors = self.embedder.embed([query, *[c.indexed_text() for c in chunks], *texts])
        query_vector, chunk_vectors, unit_vectors = vectors[0], vectors[1:len(chunks) + 1], vectors[len(chunks) + 1:]
        from core.units import parent_scores

        best = parent_scores(chunk_vectors @ query_vector, unit_vectors @ query_vector, parents)
        return fuse_orders(hits, best)


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder (a folder or hub id): candidates ordered by its score."""

    def __init__(self, location: str, device: str | None = None, batch_size: int = 16):
        from sentence_transformers import CrossEncoder

        self._model = CrossEncoder(location, device=device)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # a fast tokenizer is not safe to share between a worker's threads

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """The model's relevance score for each (query, text) pair."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        pairs = [(query, text) for text in texts]
        with self._lock:
            scores = self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return np.asarray(scores, dtype=np.float32).reshape(len(texts))

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        scores = self.scores(query, [hit.chunk.indexed_text() for hit in hits])
        order = np.argsort(-scores, kind="stable")
        return [hits[i] for i in order.tolist()]


def make_reranker(name: str, embedder: Embedder) -> Reranker | None:
    """The reranker PHOBOS_RERANKER names: "" (none), "subpassage" (dense re-scoring with ``embedder``),
    or a sentence-transformers cross-encoder (a folder, ``package:MODULE/FOLDER`` or a hub id)."""
    if not name or name == "off":
        return None
    if name == "subpassage":
        return SubPassageReranker(embedder)
    from core import package_files

    return CrossEncoderReranker(package_files.resolve(name))


def fuse_orders(hits: Sequence[Hit], rescored: np.ndarray) -> list[Hit]:
    """``hits`` re-ordered by reciprocal rank fusion of their given order and ``rescored`` (higher first)."""
    first = np.arange(len(hits))
    second = np.argsort(-rescored, kind="stable")
    return [hits[i] for i, _ in reciprocal_rank_fusion([first, second])]
