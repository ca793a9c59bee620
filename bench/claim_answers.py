"""Answers to evaluation questions, with the sources each model was shown, for hand-labelling claims.

    .venv/bin/python bench/claim_answers.py --models smollm2-135m,extractive --per-split 20 \
        --out .cache/claim-answers.jsonl

Each split's documents share one scope (as in a channel); every question is answered through
core.rag.RagEngine exactly as a worker answers it (same retrieval, prompt and generation parameters),
greedy where the model allows it so a rerun gives the same text. One JSON line per answer:
id, split, model, question, answer, sources ([{n, label, text}], what the model was shown), seconds.
``--per-split`` questions of each split, taken in turn from each document present, in file order.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from common import ROOT, MemoryStore

from core.documents import Citation
from core.generation import GenerationParams
from core.index import ScopeIndex
from core.ingest import ingest_document
from core.scope import Scope
from phobos import runtime
from phobos.settings import Settings

EVAL_DIR = ROOT / "bench" / "eval"
DOC_DIR = ROOT / ".cache" / "eval-docs"


class Store(MemoryStore):
    def load_index(self, scope_key: str, dim: int, embedder_name: str = "") -> ScopeIndex:
        return super().load_index(scope_key, dim)


def questions(split: str, limit: int, docs: Path, skip: Collection[str] = ()) -> list[dict]:
    rows = [json.loads(line) for line in (EVAL_DIR / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row["id"] not in skip]
    by_doc: dict[str, list[dict]] = {}
    for row in rows:
        if (docs / row["doc"]).exists():
            by_doc.setdefault(row["doc"], []).append(row)
    chosen: list[dict] = []
    while len(chosen) < limit and any(by_doc.values()):  # round robin: every document gets its share
        for doc in sorted(by_doc):
            if by_doc[doc] and len(chosen) < limit:
                chosen.append(by_doc[doc].pop(0))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="smollm2-135m,extractive")
    parser.add_argument("--per-split", type=int, default=20)
    parser.add_argument("--splits", default="dev,heldout")
    parser.add_argument("--docs", type=Path, default=DOC_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "claim-answers.jsonl")
    parser.add_argument("--skip-answered", type=Path, default=None,
                        help="leave out the questions this answers file (bench/eval/claim_answers.jsonl) already has")
    args = parser.parse_args()
    skip = set()
    if args.skip_answered is not None:
        skip = {json.loads(line)["id"] for line in args.skip_answered.read_text().splitlines() if line.strip()}

    settings = Settings()
    embedder = runtime.load_embedder(settings)
    registry = runtime.load_registry(settings)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    generators = runtime.load_generators(settings, registry, names)
    store = Store()
    engine = runtime.engine(settings, embedder, store)  # as a worker builds it
    limits = settings.ingest.limits()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        for split in args.splits.split(","):
            asked = questions(split, args.per_split, args.docs, skip)
            scope = Scope("bench", "claims", split)
            for doc in sorted({q["doc"] for q in asked}):
                ingest_document((args.docs / doc).read_bytes(), doc, scope.key, embedder, store, limits)
            for name in names:
                spec = registry.get(name)
                params = replace(GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=0.0))
                for q in asked:
                    started = time.perf_counter()
                    answer = engine.answer(q["question"], scope, generators[name], params, on_delta=lambda _: None)
                    sources = [{"n": n, "label": Citation.of(h.chunk).label(), "text": h.chunk.text}
                               for n, h in enumerate(answer.sources, 1)]
                    row = {"id": q["id"], "split": split, "model": name, "question": q["question"],
                           "answer": answer.text, "sources": sources,
                           "seconds": round(time.perf_counter() - started, 2)}
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(split, name, q["id"], row["seconds"], flush=True)


if __name__ == "__main__":
    main()
