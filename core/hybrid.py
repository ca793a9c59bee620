"""Hybrid retrieval: exact dense cosine and BM25 (bm25s), fused by reciprocal rank fusion.

Dense vectors find paraphrases; BM25 finds the rare exact words (function names, error messages) that
a small embedder blurs. Each side ranks the whole scope; the fused order takes the best of both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.documents import Chunk, Hit

log = logging.getLogger(__name__)

RRF_K = 60  # the constant from Cormack et al. (2009): damps the weight of the very top ranks
CANDIDATES = 50  # each side contributes its top this many to the fusion
MODES = ("hybrid", "dense", "lexical")


class LexicalScorer(Protocol):
    def scores(self, query: str) -> np.ndarray:
        """A lexical score per chunk for ``query``, shape (n_chunks,); 0 for no shared word."""
        ...


class LexicalIndex:
    """BM25 over chunk texts: English stop words removed, words stemmed when PyStemmer is installed."""

    def __init__(self, texts: Sequence[str]):
        import bm25s
        from bm25s.tokenization import Tokenizer

        # bm25s sets its own logger to DEBUG, which would print a line per index build in every CLI run.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._tokenizer = Tokenizer(stopwords="en", stemmer=_stemmer())
        tokens = self._tokenizer.tokenize(list(texts), return_as="tuple", show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(tokens, show_progress=False)
        self.size = len(texts)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query``, shape (n_chunks,)."""
        words = self._tokenizer.tokenize([query], update_vocab=False, return_as="string", show_progress=False)[0]
        words = [w for w in words if w]
        if not words or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(words), dtype=np.float32)

    def nbytes(self, vocabulary_word_bytes: int) -> int:
        """Memory held: the sparse score matrix, plus ``vocabulary_word_bytes`` per vocabulary word."""
        arrays = sum(int(v.nbytes) for v in self._bm25.scores.values() if isinstance(v, np.ndarray))
        return arrays + vocabulary_word_bytes * len(self._tokenizer.word_to_id)


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english").stemWord
    except ImportError:
        log.info("PyStemmer is not installed; BM25 matches whole words only")
        return None


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first."""
    n = min(n, len(scores))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, n - 1)[:n]
    return top[np.argsort(-scores[top], kind="stable")]


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], rrf_k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse rankings (arrays of item indices, best first) into one: (item, fused score), best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking.tolist(), start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda pair: -pair[1])


def hybrid_search(chunks: Sequence[Chunk], dense_scores: np.ndarray, lexical: LexicalScorer | None, query: str,
                  k: int, mode: str = "hybrid", candidates: int = CANDIDATES) -> list[Hit]:
    """Top-``k`` chunks. A hit's ``score`` stays its cosine similarity, so a relevance floor keeps meaning."""
    rankings = []
    if mode in ("hybrid", "dense"):
        rankings.append(top_indices(dense_scores, max(candidates, k)))
    if mode in ("hybrid", "lexical") and lexical is not None:
        lexical_scores = lexical.scores(query)
        ranked = top_indices(lexical_scores, max(candidates, k))
        rankings.append(ranked[lexical_scores[ranked] > 0])  # a chunk sharing no word is no lexical match
    fused = reciprocal_rank_fusion(rankings)[:k]
    return [Hit(chunks[i], float(dense_scores[i])) for i, _ in fused]
