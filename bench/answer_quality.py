"""Answer quality per model on the dev and held-out questions, as JSON (bench/results/answer_quality*.json).

    nice -n 10 .venv/bin/python bench/answer_quality.py --models smollm2-135m,extractive \\
        [--limit 30 --seed 25] [--splits dev,heldout] [--answers-dir DIR] [--out bench/results/answer_quality.json]

Each split's documents share one scope (as in a channel), indexed as a worker indexes them. Every question
goes through the worker's own path: core.rag.RagEngine (retrieval, relevance floor, context assembly,
prompt) with the generator and GenerationParams the worker builds from the registry entry. Per model and
split:
  correctness         share of the question's key facts (bench/eval/*.jsonl `key_facts`) the answer
                      states, after normalisation; a fact "a|b" is stated when either is (an alternative
                      the question already contains does not count)
  citation_recall     the answer cites ([n]) a passage from one of the gold pages
  sources_recall      a passage from a gold page was among the sources shown (retrieval's share)
  citation_precision  of the (sentence, cited source) pairs, the share where that source alone supports
                      the sentence (core.claims)
  marked_share        share of the answers' claim sentences the claim check marks as unsupported
  off_topic_refused   share of the split's off-topic probes answered with a refusal
  first_token_s, total_s  median and 90th percentile, on this machine as loaded as it was (`load`)
and the dev/held-out gap of each. Tune prompts and settings on dev only; held-out is reported.

Answers are written as they come, with their numbered sources, to ANSWERS_DIR/<model>-<split>.jsonl; a rerun
reuses the answers already there (delete the file to answer again) and recomputes every figure from them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path

from common import ROOT, MemoryStore, ingest_cached
from key_facts import fact_stated

from core.claims import ClaimThresholds, check_answer
from core.embedding import Embedder
from core.generation import ChatMessage, GenerationParams
from core.model_settings import ModelSettings
from core.prompt import cited_numbers, rag_messages
from core.rag import RagEngine
from core.registry import ModelRegistry
from core.scope import Scope
from phobos.runtime import (
    claim_thresholds,
    load_claim_embedder,
    load_embedder,
    load_generators,
    relevance_floor,
)
from phobos.runtime import engine as worker_engine
from phobos.settings import Settings

EVAL_DIR = ROOT / "bench" / "eval"
DOC_DIR = ROOT / ".cache" / "eval-docs"
CACHE = ROOT / ".cache" / "answer-bench"
SPLITS = ("dev", "heldout")
# What a refusal says: the engine's own reply when nothing passes the relevance floor, or a model's words.
REFUSAL = re.compile(
    r"(don'?t|do not|does not|doesn'?t|did not|didn'?t) (seem to )?(cover|contain|mention|say|include|provide|address)"
    r"|not (covered|mentioned|addressed|provided|included|found|available) in|no (relevant )?information"
    r"|(cannot|can'?t|could not|couldn'?t|unable to) (find|answer|determine|help)|not able to (find|answer)"
    r"|there is no mention|is not (related|relevant) to|not within the scope", re.I)
def is_refusal(answer: str) -> bool:
    return bool(REFUSAL.search(answer))


def load_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample(questions: list[dict], limit: int, seed: int) -> list[dict]:
    """``limit`` questions drawn with ``seed`` (all when limit is 0), in file order. A larger limit draws
    a superset of a smaller one's questions, so answers already written are reused."""
    if not limit or limit >= len(questions):
        return questions
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:limit])
    return [q for i, q in enumerate(questions) if i in chosen]


def build_engine(settings: Settings, embedder: Embedder, split_questions: dict[str, list[dict]],
                 claim_embedder: Embedder | None = None) -> RagEngine:
    """One store with each split's documents in its own scope, and the engine a worker builds on it."""
    store = MemoryStore()
    for split, questions in split_questions.items():
        for doc in sorted({q["doc"] for q in questions}):
            if not (DOC_DIR / doc).exists():
                raise SystemExit(f"{DOC_DIR / doc} not found; run: bash bench/eval/get-documents.sh {DOC_DIR}")
            ingest_cached(store, DOC_DIR / doc, scope_for(split).key, embedder, CACHE / "documents")
    return worker_engine(settings, embedder, store, claim_embedder)


def scope_for(split: str) -> Scope:
    return Scope("bench", "eval", split)


def answer_one(engine: RagEngine, generator, params: GenerationParams, question: str, split: str) -> dict:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    first: list[float] = []

    def on_delta(piece: str) -> None:
        if not first and piece.strip():
            first.append(time.perf_counter() - started)

    answer = engine.answer(question, scope_for(split), generator, params, on_delta=on_delta)
    total = time.perf_counter() - started
    prompt = rag_messages(question, answer.sources) if answer.sources else []
    return {"answer": answer.text, "grounded": answer.grounded,
            "sources": [{"n": n, "file": h.chunk.file_name, "pages": list(h.chunk.pages), "score": round(h.score, 3),
                         "text": h.chunk.text} for n, h in enumerate(answer.sources, 1)],
            "cited": cited_numbers(answer.text, len(answer.sources), [h.chunk.text for h in answer.sources]),
            "first_token_s": round(first[0] if first else total, 2), "total_s": round(total, 2),
            "prompt_tokens": generator.count_tokens(prompt) if prompt else 0,
            "answer_tokens": max(0, generator.count_tokens([ChatMessage("assistant", answer.text)]) - 4),
            "answer_words": len(answer.text.split())}


def run_model(model: str, settings: Settings, engine: RagEngine, splits: dict[str, list[dict]],
              probes: dict[str, list[dict]], answers_dir: Path) -> None:
    """Answer every question not yet in the model's answer files, appending as it goes: the splits'
    questions taken in turn (a run cut short still has both splits), the off-topic probes after them."""
    registry = ModelRegistry.load(settings.models.models_file)
    spec = registry.get(model)
    params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)  # as the worker
    paths = {split: answers_dir / f"{model}-{split}.jsonl" for split in splits}
    done = {split: {r["id"] for r in load_jsonl(path)} for split, path in paths.items()}
    turns = [[(split, q) for q in questions] for split, questions in splits.items()]
    turns += [[(split, q) for q in probes[split]] for split in splits]
    todo = [pair for group in (zip_longest(*turns[:len(splits)]), zip_longest(*turns[len(splits):]))
            for row in group for pair in row if pair is not None and pair[1]["id"] not in done[pair[0]]]
    if not todo:
        return
    generator = load_generators(settings, registry, [model])[model]
    answers_dir.mkdir(parents=True, exist_ok=True)
    for n, (split, q) in enumerate(todo, 1):
        record = {"id": q["id"], "model": model, "split": split, "question": q["question"],
                  "off_topic": "doc" not in q, **answer_one(engine, generator, params, q["question"], split)}
        with paths[split].open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{model} {split} {n}/{len(todo)} {q['id']} {record['total_s']} s", file=sys.stderr, flush=True)
    generator.close()


def claim_figures(records: Sequence[dict], embedder: Embedder, limits: ClaimThresholds) -> dict:
    """Citation precision and the share of claim sentences marked unsupported, from core.claims."""
    pairs = supported_pairs = claims = marked = 0
    for record in records:
        sources = [s["text"] for s in record["sources"]]
        if not sources:
            continue
        check = check_answer(record["answer"], sources, embedder, limits)
        claims += len(check.claims)
        marked += len(check.unsupported)
        for sentence in check.claims:
            bare = re.sub(r"\s*\[\d{1,3}(?:\s*[,;-]\s*\d{1,3})*\]", "", sentence.text)
            for number in sentence.cited:
                if 1 <= number <= len(sources):
                    pairs += 1
                    # that source alone, as if the sentence cited nothing else
                    supported_pairs += check_answer(bare, [sources[number - 1]], embedder, limits).support_share == 1.0
    return {"citation_precision": round(supported_pairs / pairs, 3) if pairs else None, "cited_pairs": pairs,
            "marked_share": round(marked / claims, 3) if claims else None, "claim_sentences": claims}


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def speed(records: list[dict]) -> dict:
    """Prompt size, decode rate and what a 150-word answer would take (median first token plus 150 words
    at the median decode rate and this model's words per token), from the answers' own timings."""
    timed = [r for r in records if r.get("answer_tokens", 0) > 1 and r["total_s"] > r["first_token_s"]]
    if not timed:
        return {}
    rate = statistics.median((r["answer_tokens"] - 1) / (r["total_s"] - r["first_token_s"]) for r in timed)
    tokens_per_word = sum(r["answer_tokens"] for r in timed) / max(1, sum(r["answer_words"] for r in timed))
    first = statistics.median(r["first_token_s"] for r in records)
    return {"prompt_tokens_median": int(statistics.median(r["prompt_tokens"] for r in timed)),
            "decode_tokens_per_s": round(rate, 2),
            "projected_150_words_s": round(first + 150 * tokens_per_word / rate, 1)}


def summarise(records: list[dict], questions: dict[str, dict], embedder: Embedder | None,
              limits: ClaimThresholds | None = None) -> dict:
    on_topic = [r for r in records if not r["off_topic"] and r["id"] in questions]
    probes = [r for r in records if r["off_topic"]]
    shares, cited_gold, shown_gold = [], 0, 0
    for r in on_topic:
        q = questions[r["id"]]
        facts = q.get("key_facts", [])
        if facts:
            shares.append(sum(fact_stated(f, r["answer"], q["question"]) for f in facts) / len(facts))
        gold = [s for s in r["sources"] if s["file"] == q["doc"] and set(s["pages"]) & set(q["pages"])]
        shown_gold += bool(gold)
        cited_gold += any(s["n"] in r["cited"] for s in gold)
    n = max(1, len(on_topic))
    figures: dict = {
        "questions": len(on_topic),
        "correctness": round(statistics.mean(shares), 3) if shares else None,
        "fully_correct": round(sum(s == 1.0 for s in shares) / len(shares), 3) if shares else None,
        "citation_recall": round(cited_gold / n, 3),
        "sources_recall": round(shown_gold / n, 3),
        "off_topic_probes": len(probes),
        "off_topic_refused": round(sum(is_refusal(r["answer"]) for r in probes) / len(probes), 3) if probes else None,
        "on_topic_refused": round(sum(is_refusal(r["answer"]) for r in on_topic) / n, 3),
        "first_token_s": {"median": percentile([r["first_token_s"] for r in on_topic], 0.5),
                          "p90": percentile([r["first_token_s"] for r in on_topic], 0.9)},
        "total_s": {"median": percentile([r["total_s"] for r in on_topic], 0.5),
                    "p90": percentile([r["total_s"] for r in on_topic], 0.9)},
        **speed(on_topic),
    }
    if embedder is not None:
        figures.update(claim_figures(on_topic, embedder, limits or ClaimThresholds()))
    return figures


def gap(dev: dict, heldout: dict) -> dict:
    """dev minus held-out for every figure both have as a number."""
    return {k: round(dev[k] - heldout[k], 3) for k in dev
            if isinstance(dev.get(k), float) and isinstance(heldout.get(k), float)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="extractive,smollm2-135m")
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--limit", type=int, default=0, help="questions per split, drawn with --seed (0: all)")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--no-probes", action="store_true", help="skip the off-topic probes")
    parser.add_argument("--answers-dir", type=Path, default=CACHE / "answers")
    parser.add_argument("--no-claims", action="store_true", help="skip the claim check figures")
    parser.add_argument("--summary-only", action="store_true", help="answer nothing; figures from the files")
    parser.add_argument("--common", action="store_true",
                        help="figures over the questions every model has answered (runs cut short)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "answer_quality.json")
    args = parser.parse_args()

    settings = Settings(models=ModelSettings(lazy_embedder=False))
    splits = {s: sample(load_jsonl(EVAL_DIR / f"{s}.jsonl"), args.limit, args.seed) for s in args.splits.split(",")}
    probes = {s: [] if args.no_probes else [p for p in load_jsonl(EVAL_DIR / "offtopic.jsonl") if p["split"] == s]
              for s in splits}
    embedder = load_embedder(settings)
    # The claim check's own embedder and thresholds (PHOBOS_CLAIM_EMBEDDER), as a worker has them.
    claim_embedder, claim_limits = load_claim_embedder(settings, embedder), claim_thresholds(settings)
    load_before = os.getloadavg()
    started = time.perf_counter()
    if not args.summary_only:
        engine = build_engine(settings, embedder, splits, claim_embedder)
        for model in args.models.split(","):
            run_model(model, settings, engine, splits, probes, args.answers_dir)
    questions = {q["id"]: q for qs in splits.values() for q in qs}
    report: dict = {"limit": args.limit, "seed": args.seed, "common": args.common,
                    "questions": {s: len(q) for s, q in splits.items()},
                    "answers_dir": str(args.answers_dir), "top_k": settings.retrieval.top_k,
                    "min_relevance": relevance_floor(settings), "reranker": settings.retrieval.reranker or None,
                    "cpu_count": os.cpu_count(), "load": {"before": [round(x, 2) for x in load_before],
                                                          "after": [round(x, 2) for x in os.getloadavg()]},
                    "wall_s": round(time.perf_counter() - started, 1), "models": {}}
    models = args.models.split(",")
    answered = {(m, s): load_jsonl(args.answers_dir / f"{m}-{s}.jsonl") for m in models for s in splits}
    for split, qs in splits.items():
        wanted = {q["id"] for q in [*qs, *probes[split]]}
        if args.common:
            for model in models:
                wanted &= {r["id"] for r in answered[(model, split)]}
        report.setdefault("compared", {})[split] = sorted(wanted)
    for model in models:
        row: dict = {}
        for split in splits:
            records = [r for r in answered[(model, split)] if r["id"] in set(report["compared"][split])]
            row[split] = summarise(records, questions, None if args.no_claims else claim_embedder, claim_limits)
        if "dev" in row and "heldout" in row:
            row["gap"] = gap(row["dev"], row["heldout"])
        report["models"][model] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
