"""Second-stage rerankers: re-order the first stage's top candidates with a closer look at each.

A cross-encoder reads the question and a passage together, so it sees how they relate rather than
comparing two separate vectors; it is too slow to run over a whole scope but fine over 30-50
candidates. No cross-encoder ships in a package, so the offline second stages are dense:

- ``dense:NAME`` (the default, ``dense:mpnet``): a larger embedder re-scores the first stage's top
  candidates. The first stage searches the whole scope with the small embedder every passage was
  indexed with; only the top 20 are embedded again, with the model the claim check already holds.
- ``subpassage``: each candidate is split into ~100-token units, embedded with the question's
  embedder, and ranked by its best unit, fused with the first-stage order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.documents import Hit
from core.embedding import Embedder
from core.hybrid import DENSE_WEIGHT, DENSE_Z_SCALE, reciprocal_rank_fusion
from core.units import UNIT_TOKENS, matching_units

RERANK_CANDIDATES = 40  # first-stage hits a reranker looks at
DENSE_PREFIX = "dense:"  # PHOBOS_RERANKER=dense:NAME: re-score with the embedder NAME (core/embedders.toml)
# The dense second stage looks at fewer: it embeds every candidate at question time (about 0.1 s each with
# all-mpnet-base-v2 on 2 CPU cores). On the dev split 20 found 3 more gold pages in the top 5 than the first
# stage, 25 found 5, 10 found 1 (bench/retrieval_quality.py, pipeline +D).
DENSE_RERANK_CANDIDATES = 20
# The weight of the second embedder's cosine (its z-score over the candidates / DENSE_Z_SCALE) added to the
# first stage's fused score: the same as the first embedder's, so BM25 keeps its say (dev: 0.3, 0.6, 1.0 compared).
DENSE_RERANK_WEIGHT = DENSE_WEIGHT
DENSE_RERANK_CACHE_VECTORS = 8192  # passages' vectors kept between questions: ~25 MB at 768 dimensions


class Reranker(Protocol):
    candidates: int  # first-stage hits it looks at

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` (first-stage order, best first) in the reranker's order. Scores stay cosines."""
        ...


class SubPassageReranker:
    """Dense re-scoring of sub-passages: a candidate ranks by its best ~100-token unit's cosine,
    fused by reciprocal rank with the first-stage order (the units alone lose the passage's context)."""

    candidates = RERANK_CANDIDATES

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

    candidates = RERANK_CANDIDATES

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


class SecondEmbedderReranker:
    """A larger embedder's cosine to each candidate, added to the first stage's fused score.

    A small embedder searches the whole scope fast, and is what the documents were indexed with; a larger
    one tells a paraphrase from a near miss better, but embedding a whole scope with it costs minutes on a
    CPU. So the larger one looks only at the first stage's best ``candidates``. Its cosines are put on the
    first stage's scale (z-score over the candidates, / DENSE_Z_SCALE) and added with DENSE_RERANK_WEIGHT,
    so what BM25 found still counts. Hits keep the first embedder's cosine as their score: the relevance
    floors were calibrated on it; the second cosine goes in ``Hit.second_score``, for the second embedder's
    own floor (core.rag). Passages' vectors are kept (least recently used out) for later questions.
    """

    def __init__(self, embedder: Embedder, candidates: int = DENSE_RERANK_CANDIDATES,
                 weight: float = DENSE_RERANK_WEIGHT, cache_vectors: int = DENSE_RERANK_CACHE_VECTORS):
        self.embedder = embedder
        self.candidates = candidates
        self.weight = weight
        self.cache_vectors = cache_vectors
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the cache is shared by a worker's ask threads

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        if len(hits) < 2:
            return list(hits)
        cosines = self.passage_vectors([hit.chunk.indexed_text() for hit in hits]) @ self.embedder.embed([query])[0]
        hits = [dataclasses.replace(hit, second_score=float(cosine)) for hit, cosine in zip(hits, cosines, strict=True)]
        if any(hit.fused is None for hit in hits):  # the first stage fused by rank: fuse by rank again
            return fuse_orders(hits, cosines)
        spread = float(cosines.std())
        z = (cosines - float(cosines.mean())) / (spread * DENSE_Z_SCALE) if spread > 0 else np.zeros_like(cosines)
        combined = np.array([hit.fused for hit in hits], dtype=np.float32) + self.weight * z
        return [hits[i] for i in np.argsort(-combined, kind="stable").tolist()]

    def passage_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """The embedder's vector of each text, from the cache where it was embedded before."""
        keys = [hashlib.sha1(text.encode()).hexdigest() for text in texts]
        with self._lock:
            known = {key: self._cache[key] for key in keys if key in self._cache}
            for key in known:
                self._cache.move_to_end(key)
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in known}
        if missing:
            fresh = self.embedder.embed(list(missing.values()))
            known.update(zip(missing, fresh, strict=True))
            with self._lock:
                for key in missing:
                    self._cache[key] = known[key]
                while len(self._cache) > self.cache_vectors:
                    self._cache.popitem(last=False)
        return np.vstack([known[key] for key in keys]).astype(np.float32)


def make_reranker(name: str, embedder: Embedder, second_embedder: Embedder | None = None) -> Reranker | None:
    """The reranker PHOBOS_RERANKER names: "" (none), "dense:NAME" (``second_embedder``, the embedder NAME,
    re-scores the candidates; none when NAME is the documents' embedder itself, passed as ``None`` or as
    ``embedder``), "subpassage" (re-scoring with ``embedder``), or a sentence-transformers cross-encoder (a
    folder, ``package:MODULE/FOLDER`` or a hub id)."""
    if not name or name == "off":
        return None
    if name.startswith(DENSE_PREFIX):
        if second_embedder is None or second_embedder is embedder:
            return None
        return SecondEmbedderReranker(second_embedder)
    if name == "subpassage":
        return SubPassageReranker(embedder)
    from core import package_files

    return CrossEncoderReranker(package_files.resolve(name))


def fuse_orders(hits: Sequence[Hit], rescored: np.ndarray) -> list[Hit]:
    """``hits`` re-ordered by reciprocal rank fusion of their given order and ``rescored`` (higher first)."""
    first = np.arange(len(hits))
    second = np.argsort(-rescored, kind="stable")
    return [hits[i] for i, _ in reciprocal_rank_fusion([first, second])]
