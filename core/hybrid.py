"""Hybrid retrieval: exact dense cosine and BM25 (bm25s), fused by a weighted sum of normalised scores.

Dense vectors find paraphrases; BM25 finds the rare exact words (function names, error messages) that
a small embedder blurs. Each side scores the whole scope; the fused order takes the best of both.

Why a weighted sum and not reciprocal rank fusion (RRF): RRF gives a side's top rank the same weight
however weak its match is. A question in everyday words shares only common words ("copy", "machine")
with the page that answers it, so BM25's top ranks are noise, and RRF lets any passage that is mediocre
on both sides outrank the one the dense side put first. Scores keep how sure each side is (Bruch et al.,
"An Analysis of Fusion Functions for Hybrid Retrieval", 2023). On the dev split of bench/eval the sum
reached recall@5 0.918 against RRF's 0.816 (bench/retrieval_quality.py; held-out is reported there too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.documents import Chunk, Hit

log = logging.getLogger(__name__)

RRF_K = 60  # the constant from Cormack et al. (2009): damps the weight of the very top ranks
CANDIDATES = 50  # RRF: each side contributes its top this many to the fusion
MODES = ("hybrid", "dense", "lexical")
FUSIONS = ("sum", "rrf")
DENSE_WEIGHT = 0.6  # the dense side's share of the fused score; picked on the dev split only
# A cosine's z-score over the scope divided by this puts the best passages near 1, the scale of BM25
# divided by its best score: typical top hits sit 3-5 standard deviations above the scope's mean.
DENSE_Z_SCALE = 4.0
# Subtracted from a navigation passage's fused score (core.navigation): below any content passage that
# matches about as well. The best passages' fused scores sit near 1.
NAVIGATION_PENALTY = 0.5


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
        return self.scores_of_terms(query_terms(query))

    def scores_of_terms(self, terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every chunk for a query already split into terms (:func:`query_terms`): several
        indexes searched at once (core/joined.py) split the question once, not once each."""
        known = [term for term in terms if term in self._bm25.vocab_dict]
        if not known or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)

    def nbytes(self, vocabulary_word_bytes: int) -> int:
        """Memory held: the sparse score matrix, plus ``vocabulary_word_bytes`` per vocabulary word."""
        arrays = sum(int(v.nbytes) for v in self._bm25.scores.values() if isinstance(v, np.ndarray))
        return arrays + vocabulary_word_bytes * len(self._tokenizer.word_to_id)


def query_terms(query: str) -> list[str]:
    """A question as BM25 terms: lowercased words, English stop words removed, stemmed as the indexes' texts.

    Done without any index's vocabulary (reverse-mapping one costs time in its size), so once per question."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    stem = _stemmer()
    terms = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    return [stem(term) if stem else term for term in terms if term]


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


def fused_scores(dense_scores: np.ndarray, lexical_scores: np.ndarray,
                 dense_weight: float = DENSE_WEIGHT) -> np.ndarray:
    """``dense_weight`` x the cosines' z-scores (over the scope, / DENSE_Z_SCALE) plus the rest x BM25
    divided by its best score for this question: each side on a comparable scale, neither forced to
    rank something first."""
    dense = np.asarray(dense_scores, dtype=np.float32)
    spread = float(dense.std()) if dense.size > 1 else 0.0
    dense_z = (dense - float(dense.mean())) / (spread * DENSE_Z_SCALE) if spread > 0 else np.zeros_like(dense)
    best = float(lexical_scores.max()) if lexical_scores.size else 0.0
    lexical = lexical_scores / best if best > 0 else np.zeros_like(dense)
    return dense_weight * dense_z + (1.0 - dense_weight) * lexical


def hybrid_search(chunks: Sequence[Chunk], dense_scores: np.ndarray, lexical: LexicalScorer | None, query: str,
                  k: int, mode: str = "hybrid", candidates: int = CANDIDATES, fusion: str = "sum",
                  navigation: np.ndarray | None = None) -> list[Hit]:
    """Top-``k`` chunks. A hit's ``score`` stays its cosine similarity, so a relevance floor keeps meaning.

    ``navigation`` marks table-of-contents and index passages (core.navigation), ranked below content."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
    if mode == "hybrid" and lexical is not None and fusion == "sum":
        scores = fused_scores(dense_scores, lexical.scores(query))
        if navigation is not None:
            scores = scores - NAVIGATION_PENALTY * navigation
        order = top_indices(scores, k)
        return [Hit(chunks[i], float(dense_scores[i]), float(scores[i])) for i in order.tolist()]
    rankings = []
    if mode in ("hybrid", "dense"):
        rankings.append(top_indices(dense_scores, max(candidates, k)))
    if mode in ("hybrid", "lexical") and lexical is not None:
        lexical_scores = lexical.scores(query)
        ranked = top_indices(lexical_scores, max(candidates, k))
        rankings.append(ranked[lexical_scores[ranked] > 0])  # a chunk sharing no word is no lexical match
    fused = reciprocal_rank_fusion(rankings)[:k]
    return [Hit(chunks[i], float(dense_scores[i])) for i, _ in fused]
