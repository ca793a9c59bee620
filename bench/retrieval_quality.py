"""Recall@5 and MRR on ../shared/eval/dev.jsonl (questions over R-lang.pdf), Phobos vs the tutorial, as JSON.

    .venv/bin/python bench/retrieval_quality.py [--mode hybrid|dense|lexical] [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import time

from common import EVAL, MemoryStore, concrete_embedder, manual, tutorial_ingest, tutorial_search

from core.ingest import ingest_document
from core.rag import RagEngine
from core.scope import Scope
from phobos.runtime import ingest_limits
from phobos.settings import Settings

K = 5
MRR_DEPTH = 10
# Questions no R manual answers, to see where the relevance floor (PHOBOS_MIN_RELEVANCE) should sit.
OFF_TOPIC = ["How long should sourdough bread rise before baking?", "Who won the football world cup in 2018?",
             "What is the capital city of Australia?", "How do I reset the password of my wifi router?",
             "When is the best time of year to plant tomatoes?", "What are the side effects of ibuprofen?",
             "How many moons does Jupiter have?", "Which train goes from Vienna to Salzburg at night?"]


def score(ranked_pages: list[tuple[int, ...]], gold: set[int]) -> tuple[bool, float]:
    """(hit in top K, reciprocal rank of the first hit within MRR_DEPTH)."""
    for rank, pages in enumerate(ranked_pages[:MRR_DEPTH], start=1):
        if gold & set(pages):
            return rank <= K, 1.0 / rank
    return False, 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "dense", "lexical"])
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--no-tutorial", action="store_true")
    args = parser.parse_args()
    questions = [json.loads(line) for line in (EVAL / "dev.jsonl").read_text().splitlines() if line.strip()]
    settings = Settings()
    embedder = concrete_embedder(settings)
    results: dict[str, object] = {"questions": len(questions), "embedder": settings.embedder, "k": K,
                                  "mrr_depth": MRR_DEPTH}

    store = MemoryStore()
    scope = Scope("bench", "w", "c")
    docs = {}
    for name in sorted({q["doc"] for q in questions}):
        started = time.perf_counter()
        result = ingest_document(manual(name).read_bytes(), name, scope.key, embedder, store, ingest_limits(settings))
        docs[name] = {"pages": result.info.pages, "chunks": result.info.chunks,
                      "ingest_s": round(time.perf_counter() - started, 2)}
    engine = RagEngine(embedder, store, top_k=K, min_relevance=settings.min_relevance, mode=args.mode)
    hits, rr, misses = 0, 0.0, []
    for q in questions:
        ranked = [(h.chunk.pages if h.chunk.file_name == q["doc"] else ()) for h in
                  engine.retrieve(q["question"], scope, k=MRR_DEPTH)]
        found, reciprocal = score(ranked, set(q["pages"]))
        hits += found
        rr += reciprocal
        if not found:
            misses.append({"id": q["id"], "gold": q["pages"], "got": [list(p) for p in ranked[:K]]})
    best = {q["id"]: max(h.score for h in engine.retrieve(q["question"], scope, k=K)) for q in questions}
    off = [max(h.score for h in engine.retrieve(question, scope, k=K)) for question in OFF_TOPIC]
    covered = [c for c in (engine.context(question, scope) for question in OFF_TOPIC) if c]
    results["relevance_floor"] = {
        "min_relevance": settings.min_relevance,
        "dev_best_cosine_min": round(min(best.values()), 3),
        "off_topic_best_cosine_max": round(max(off), 3),
        "off_topic_best_cosines": sorted(round(score, 3) for score in off),
        "dev_best_cosines_lowest_5": sorted(round(score, 3) for score in best.values())[:5],
        "off_topic_answered_not_covered": f"{len(OFF_TOPIC) - len(covered)}/{len(OFF_TOPIC)}",
        "dev_questions_under_floor": sum(score < settings.min_relevance for score in best.values()),
    }
    results["phobos"] = {"mode": args.mode, "recall_at_5": round(hits / len(questions), 3),
                         "mrr": round(rr / len(questions), 3), "found": hits, "documents": docs,
                         "chunk_tokens": settings.chunk_tokens, "overlap_tokens": settings.chunk_overlap_tokens}
    if args.show_misses:
        results["phobos_misses"] = misses

    if not args.no_tutorial:
        model = embedder._model  # the same embedder, used the tutorial's way
        hits, rr = 0, 0.0
        indexes = {name: tutorial_ingest(manual(name), model) for name in docs}
        for q in questions:
            ranked = [(p,) for p in tutorial_search(indexes[q["doc"]], model, q["question"], k=MRR_DEPTH)]
            found, reciprocal = score(ranked, set(q["pages"]))
            hits += found
            rr += reciprocal
        results["tutorial"] = {"recall_at_5": round(hits / len(questions), 3), "mrr": round(rr / len(questions), 3),
                               "found": hits, "chunks": sum(len(i.texts) for i in indexes.values())}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
