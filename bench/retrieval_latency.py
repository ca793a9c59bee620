"""Retrieval latency p50/p99 for one question at 10k, 100k and 1M chunks in one scope, as JSON.

The scope is synthetic: random unit vectors (the embedder's dimension) and chunk texts drawn from the
words of R-lang.pdf, so both the dense and the BM25 side do real work. "search" is the hybrid search
over the scope (exact dense matrix-vector product, BM25, fusion); "with_query_embedding" adds
embedding the question with the real embedder.

    .venv/bin/python bench/retrieval_latency.py [--sizes 10000,100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

import numpy as np
from common import concrete_embedder, manual

from core.documents import Chunk
from core.index import ScopeIndex

WORDS_PER_CHUNK = 40
SEED = 1


def vocabulary() -> list[str]:
    import pymupdf

    with pymupdf.open(manual("R-lang.pdf")) as document:
        text = " ".join(page.get_text() for page in document)
    return re.findall(r"[A-Za-z][A-Za-z.]{2,}", text)  # with repeats: a natural word distribution


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rerank-queries", type=int, default=10)
    args = parser.parse_args()
    from phobos.settings import Settings

    embedder = concrete_embedder(Settings())
    words = vocabulary()
    rng = random.Random(SEED)
    questions = [" ".join(rng.choices(words, k=rng.randint(5, 12))) + "?" for _ in range(args.queries)]
    query_vectors = embedder.embed(questions)
    embed_times = []
    for question in questions[:50]:
        started = time.perf_counter()
        embedder.embed([question])
        embed_times.append(time.perf_counter() - started)
    results: dict[str, object] = {"dim": embedder.dim, "queries": args.queries,
                                  "query_embedding_ms": {"p50": percentile(embed_times, 50),
                                                         "p99": percentile(embed_times, 99)}}
    generator = np.random.default_rng(SEED)
    for size in (int(s) for s in args.sizes.split(",")):
        vectors = generator.standard_normal((size, embedder.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [Chunk("d", "f.pdf", " ".join(rng.choices(words, k=WORDS_PER_CHUNK)), i // 4 + 1, i // 4 + 1, i)
                  for i in range(size)]
        index = ScopeIndex(chunks, vectors)
        started = time.perf_counter()
        index.lexical()
        build_s = time.perf_counter() - started
        row: dict[str, object] = {"bm25_build_s": round(build_s, 1)}
        for mode in ("dense", "hybrid"):
            times = []
            for question, vector in zip(questions, query_vectors, strict=True):
                started = time.perf_counter()
                index.hybrid_search(vector, question, 10, mode)
                times.append(time.perf_counter() - started)
            row[f"{mode}_search_ms"] = {"p50": percentile(times, 50), "p99": percentile(times, 99)}
        hybrid = row["hybrid_search_ms"]
        assert isinstance(hybrid, dict)
        row["hybrid_with_query_embedding_ms_p50"] = round(hybrid["p50"] + results["query_embedding_ms"]["p50"], 2)  # type: ignore[index]
        results[f"{size}_chunks"] = row
        del index, chunks, vectors
    results["reranker_added_ms"] = reranker_latency(embedder, words, questions[:args.rerank_queries], rng)
    results["second_embedder_added_ms"] = second_embedder_latency(words, questions[:args.rerank_queries], rng)
    print(json.dumps(results, indent=2))


def reranker_latency(embedder, words: list[str], questions: list[str], rng: random.Random) -> dict:  # type: ignore[no-untyped-def]
    """What the second stage adds per question: the sub-passage reranker over RERANK_CANDIDATES
    passages of about 200 tokens (it embeds their ~100-token units at question time)."""
    from core.documents import Hit
    from core.rerank import RERANK_CANDIDATES, SubPassageReranker

    def passage() -> str:
        return " ".join(" ".join(rng.choices(words, k=12)).capitalize() + "." for _ in range(12))

    reranker = SubPassageReranker(embedder)
    times = []
    for question in questions:
        hits = [Hit(Chunk("d", "f.pdf", passage(), 1, 1, i), 0.5) for i in range(RERANK_CANDIDATES)]
        started = time.perf_counter()
        reranker.rerank(question, hits)
        times.append(time.perf_counter() - started)
    return {"candidates": RERANK_CANDIDATES, "p50": percentile(times, 50), "p99": percentile(times, 99)}


def second_embedder_latency(words: list[str], questions: list[str], rng: random.Random) -> dict:
    """What the default second stage (PHOBOS_RERANKER=dense:mpnet) adds per question, over its
    DENSE_RERANK_CANDIDATES passages of about 200 tokens: "cold" when none was seen before (the first
    question on a document), "warm" when all were (the passages' vectors are kept between questions)."""
    from core.documents import Hit
    from core.rerank import DENSE_RERANK_CANDIDATES, SecondEmbedderReranker
    from phobos.runtime import load_claim_embedder, load_second_embedder
    from phobos.settings import Settings

    settings = Settings()
    first = concrete_embedder(settings)
    second = load_second_embedder(settings, first, load_claim_embedder(settings, first))
    if second is None:
        return {}
    started = time.perf_counter()
    second.embed(["warm up"])  # its load is paid once per worker (ahead of its first question)
    load_s = time.perf_counter() - started

    def passage() -> str:
        return " ".join(" ".join(rng.choices(words, k=12)).capitalize() + "." for _ in range(12))

    reranker = SecondEmbedderReranker(second)
    cold, warm = [], []
    for question in questions:
        hits = [Hit(Chunk("d", "f.pdf", passage(), 1, 1, i), 0.5, 1.0 - i / 100)
                for i in range(DENSE_RERANK_CANDIDATES)]
        for times in (cold, warm):
            started = time.perf_counter()
            reranker.rerank(question, hits)
            times.append(time.perf_counter() - started)
    return {"candidates": DENSE_RERANK_CANDIDATES, "embedder": second.name, "load_s": round(load_s, 1),
            "cold_p50": percentile(cold, 50), "cold_p99": percentile(cold, 99),
            "warm_p50": percentile(warm, 50), "warm_p99": percentile(warm, 99)}


if __name__ == "__main__":
    main()
