"""Recall@5 and MRR@10 per split (dev, held-out), per pipeline, side by side in one run, as JSON.

    .venv/bin/python bench/retrieval_quality.py [--embedders minilm,mpnet] [--expansion] [--show-misses]

Each split's documents share one scope (as in a channel), so a hit must name the right document and
one of the right pages. Pipelines, all on the same embedder:
  tutorial   the tutorial's pipeline (spaCy sentences, 10 per chunk, dense top-k)
  rrf        Phobos before the fusion change: 250-token chunks, dense + BM25 by reciprocal rank fusion
  hybrid     the same first stage fused by a weighted sum of normalised scores (core.hybrid, the default)
  +S         section context: title and heading path embedded and indexed with each chunk
  +U         small matching units (~100 tokens) that return their parent chunk
  +R         second stage: dense re-scoring of sub-passages over the top 40
  +D         second stage: a second embedder (--second-embedder, mpnet) re-scores the top 20, added to the
             first stage's fused score (core.rerank.SecondEmbedderReranker, the default PHOBOS_RERANKER)
  +E         (--expansion) a hypothetical answer from SmolLM2-135M as a second dense query, fused
Tune on dev only; held-out is reported, never used to pick a setting. Embeddings are cached under
.cache/retrieval-bench so a rerun only embeds what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from common import ROOT, tutorial_ingest

from core.chunking import SECTION_RESERVE_TOKENS, SELF_CONTAINED_UNITS, Chunker
from core.documents import Chunk, Hit, PageText
from core.embedders import choose_embedder, model_location
from core.embedding import Embedder, SentenceTransformerEmbedder
from core.hybrid import LexicalIndex, hybrid_search, reciprocal_rank_fusion, top_indices
from core.navigation import navigation_mask
from core.pdf_sandbox import ParseLimits, SandboxedPdf
from core.rerank import RERANK_CANDIDATES, Reranker, SecondEmbedderReranker, fuse_orders
from core.units import matching_units, parent_scores

K = 5
MRR_DEPTH = 10
EVAL_DIR = ROOT / "bench" / "eval"
DOC_DIRS = [ROOT / ".cache" / "eval-docs", ROOT / ".cache" / "r-manuals"]
CACHE = ROOT / ".cache" / "retrieval-bench"
CHUNK_TOKENS, OVERLAP_TOKENS = 250, 30


def load_split(name: str) -> list[dict]:
    path = EVAL_DIR / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def document(name: str) -> Path:
    for folder in DOC_DIRS:
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"{name} not found; run: bash bench/eval/get-documents.sh {DOC_DIRS[0]}")


def read_pages(name: str) -> tuple[list[PageText], str]:
    """Pages as the worker reads them (sandboxed, cleaned, with sections) and what they are (page,
    slide), cached per file."""
    data = document(name).read_bytes()
    cached = CACHE / "pages" / f"{hashlib.sha256(data).hexdigest()[:16]}-v2.json"
    if cached.exists():
        saved = json.loads(cached.read_text())
        return [PageText(n, t, label, tuple((o, p) for o, p in s)) for n, t, label, s in saved["pages"]], \
            saved["unit"]
    with SandboxedPdf(data, name, ParseLimits(ocr=False)) as pdf:
        pages = list(pdf.pages())
        unit = pdf.unit
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"unit": unit, "pages": [[p.number, p.text, p.label, p.sections] for p in pages]}))
    return pages, unit


class CachedEmbedder:
    """The real embedder with its vectors cached on disk by text, so reruns only embed what is new."""

    def __init__(self, name: str):
        spec = choose_embedder(name)
        self.name = name
        self.spec = spec
        self.inner = SentenceTransformerEmbedder(model_location(spec.source, ROOT / ".phobos" / "embedders"))
        self.dim, self.max_tokens = self.inner.dim, self.inner.max_tokens
        self.path = CACHE / f"vectors-{name}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            saved = np.load(self.path)
            self.vectors = dict(zip(saved["keys"].tolist(), saved["vectors"], strict=True))
        self.new = 0
        self.embed_s = 0.0

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items())
        if missing:
            started = time.perf_counter()
            fresh = self.inner.embed([t for _, t in missing])
            self.embed_s += time.perf_counter() - started
            self.vectors.update({k: v for (k, _), v in zip(missing, fresh, strict=True)})
            self.new += len(missing)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.vstack([self.vectors[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        if self.new:
            keys = sorted(self.vectors)
            np.savez(self.path, keys=np.array(keys), vectors=np.vstack([self.vectors[k] for k in keys]))
            self.new = 0

    def encode(self, text: str, convert_to_numpy: bool = True) -> np.ndarray:
        """The tutorial's call shape (model.encode(text)), through the cache."""
        return self.embed([text])[0]


@dataclass
class Scope:
    """All documents of one split, indexed one way."""

    chunks: list[Chunk]
    vectors: np.ndarray
    lexical: LexicalIndex
    unit_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.float32))
    unit_parents: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    navigation: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def build_scope(docs: dict[str, tuple[list[PageText], str]], embedder: CachedEmbedder, sections: bool,
                units: bool) -> Scope:
    chunks: list[Chunk] = []
    for name, (pages, unit) in docs.items():
        if not sections:
            pages = [PageText(p.number, p.text, p.label) for p in pages]
        max_tokens = min(CHUNK_TOKENS, embedder.max_tokens - (SECTION_RESERVE_TOKENS if sections else 0))
        # as core.ingest chunks them: slides and sections are never packed together
        chunker = Chunker(name, name, embedder.count_tokens, max_tokens, OVERLAP_TOKENS,
                          break_at_parts=unit in SELF_CONTAINED_UNITS)
        chunks += chunker.add(pages) + chunker.finish()
    vectors = embedder.embed([c.indexed_text() for c in chunks])
    scope = Scope(chunks, vectors, LexicalIndex([c.indexed_text() for c in chunks]),
                  navigation=navigation_mask([c.text for c in chunks]))
    if units:
        texts, parents = matching_units(chunks, embedder.count_tokens)
        scope.unit_vectors, scope.unit_parents = embedder.embed(texts), parents
    return scope


def search(scope: Scope, query: str, query_vectors: Sequence[np.ndarray], units: bool, rerank: bool,
           fusion: str = "sum", second: Reranker | None = None) -> list[Hit]:
    """Top MRR_DEPTH hits. Several query vectors (expansion) each give a dense ranking, all fused."""
    def dense(vector: np.ndarray) -> np.ndarray:
        scores = scope.vectors @ vector
        return parent_scores(scores, scope.unit_vectors @ vector, scope.unit_parents) if units else scores

    dense_scores = [dense(v) for v in query_vectors]
    depth = max(RERANK_CANDIDATES if rerank else MRR_DEPTH, second.candidates if second else 0, MRR_DEPTH)
    hits = hybrid_search(scope.chunks, dense_scores[0], scope.lexical, query, depth, fusion=fusion,
                         navigation=scope.navigation)
    if len(dense_scores) > 1:  # expansion: fuse the extra dense rankings with the first stage's order
        row = {id(c): i for i, c in enumerate(scope.chunks)}
        first = np.array([row[id(h.chunk)] for h in hits])
        extra = [top_indices(s, depth) for s in dense_scores[1:]]
        fused = reciprocal_rank_fusion([first, *extra])[:depth]
        hits = [Hit(scope.chunks[i], float(dense_scores[0][i])) for i, _ in fused]
    if rerank:
        hits = rerank_units(scope, hits, query_vectors[0])
    if second is not None:
        hits = second.rerank(query, hits[:second.candidates]) + hits[second.candidates:]
    return hits[:MRR_DEPTH]


def rerank_units(scope: Scope, hits: list[Hit], query_vector: np.ndarray) -> list[Hit]:
    """core.rerank.SubPassageReranker's computation, with the units' vectors taken from the scope
    (the same vectors it embeds at question time) so the bench does not re-embed them per question."""
    rows = {id(c): i for i, c in enumerate(scope.chunks)}
    idx = np.array([rows[id(h.chunk)] for h in hits])
    units, parents = scope.unit_vectors, scope.unit_parents
    own = scope.vectors[idx] @ query_vector
    mask = np.isin(parents, idx)
    local = np.searchsorted(np.sort(idx), parents[mask])
    order = np.argsort(idx)
    best = parent_scores(own[order], units[mask] @ query_vector, local)[np.argsort(order)]
    return fuse_orders(hits, best)


def score(ranked: list[tuple[str, tuple[int, ...]]], question: dict) -> tuple[bool, float]:
    gold = set(question["pages"])
    for rank, (doc, pages) in enumerate(ranked[:MRR_DEPTH], start=1):
        if doc == question["doc"] and gold & set(pages):
            return rank <= K, 1.0 / rank
    return False, 0.0


def evaluate(questions: list[dict], ranker: Callable[[dict], list[tuple[str, tuple[int, ...]]]]) -> dict:
    hits, rr, misses = 0, 0.0, []
    for q in questions:
        found, reciprocal = score(ranker(q), q)
        hits += found
        rr += reciprocal
        if not found:
            misses.append(q["id"])
    n = max(1, len(questions))
    return {"recall_at_5": round(hits / n, 3), "mrr_at_10": round(rr / n, 3), "found": hits, "misses": misses}


def calibrate_floor(on_topic: list[float], off_topic: list[float], max_false_refusal: float = 0.05) -> float:
    """The highest floor that refuses at most ``max_false_refusal`` of the on-topic (dev) questions."""
    ordered = sorted(on_topic)
    allowed = int(max_false_refusal * len(ordered))
    return round(float(ordered[allowed]) - 0.005, 3) if ordered else 0.0


def hypothetical_answers(questions: list[dict]) -> dict[str, str]:
    """A short answer SmolLM2-135M writes without sources (HyDE), cached by question."""
    path = CACHE / "hyde-smollm2-135m.json"
    cached: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    todo = [q["question"] for q in questions if q["question"] not in cached]
    if todo:
        from core.backends import load_generator
        from core.generation import ChatMessage, GenerationParams
        from core.registry import ModelRegistry

        generator = load_generator(ModelRegistry.load().get("smollm2-135m"))
        params = GenerationParams(max_new_tokens=60, temperature=0.0)
        for question in todo:
            messages = [ChatMessage("user", f"Answer briefly, as a manual would: {question}")]
            cached[question] = "".join(generator.stream(messages, params, None)).strip()
        path.write_text(json.dumps(cached, indent=1))
    return cached


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedders", default="minilm,mpnet")
    parser.add_argument("--expansion", action="store_true", help="also measure +E with SmolLM2-135M")
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--pipelines", default="", help="comma-separated subset, e.g. hybrid,+S (default: all)")
    parser.add_argument("--splits", default="dev,heldout")
    parser.add_argument("--second-embedder", default="mpnet", help="the +D pipeline's embedder ('' for no +D)")
    parser.add_argument("--no-tutorial", action="store_true")
    args = parser.parse_args()
    splits = {name: load_split(name) for name in args.splits.split(",")}
    splits = {name: qs for name, qs in splits.items() if qs}
    probes = load_split("offtopic")
    off_topic = {split: [q["question"] for q in probes if q.get("split", "heldout") == split] for split in splits}
    docs = {name: {d: read_pages(d) for d in sorted({q["doc"] for q in qs})} for name, qs in splits.items()}
    hyde = hypothetical_answers([q for qs in splits.values() for q in qs]) if args.expansion else {}
    pipelines = [("rrf", False, False, False), ("hybrid", False, False, False), ("+S", True, False, False),
                 ("+U", False, True, False), ("+R", False, True, True), ("+S+U", True, True, False),
                 ("+S+R", True, True, True), ("+S+U+R", True, True, True)]
    if args.second_embedder:
        pipelines.append(("+D", False, False, False))
    if args.pipelines:
        pipelines = [p for p in pipelines if p[0] in args.pipelines.split(",")]
    out: dict = {"k": K, "mrr_depth": MRR_DEPTH, "rerank_candidates": RERANK_CANDIDATES,
                 "questions": {n: len(qs) for n, qs in splits.items()},
                 "off_topic_probes": {n: len(p) for n, p in off_topic.items()},
                 "documents": {n: sorted(d) for n, d in docs.items()}, "embedders": {}}
    for name in args.embedders.split(","):
        embedder = CachedEmbedder(name)
        second_embedder = CachedEmbedder(args.second_embedder) \
            if args.second_embedder and choose_embedder(args.second_embedder).source != embedder.spec.source else None
        table: dict = {}
        floors: dict = {}
        for split, questions in splits.items():
            vectors = embedder.embed([q["question"] for q in questions])
            qvec = {q["id"]: v for q, v in zip(questions, vectors, strict=True)}
            row = {}
            if not args.no_tutorial:
                tutorial = {d: tutorial_ingest(document(d), embedder) for d in docs[split]}
                row["tutorial"] = evaluate(
                questions, lambda q, t=tutorial, e=embedder: _tutorial_rank(t, e, q["question"]))
            scopes: dict[tuple[bool, bool], Scope] = {}
            for label, sections, units, rerank in pipelines:
                if label == "+D" and second_embedder is None:
                    continue
                second = SecondEmbedderReranker(cast(Embedder, second_embedder)) if label == "+D" else None
                key = (sections, units or rerank)
                if key not in scopes:
                    scopes[key] = build_scope(docs[split], embedder, sections, units or rerank)
                scope = scopes[key]
                # +S+R: the rerank needs the units' vectors, but the first stage does not use them.
                use_units = units and label != "+S+R" and label != "+R"

                def rank(q: dict, scope: Scope = scope, use_units: bool = use_units, rerank: bool = rerank,
                         extra: tuple = (), qvec: dict = qvec, fusion: str = "rrf" if label == "rrf" else "sum",
                         second: Reranker | None = second) -> list[tuple[str, tuple[int, ...]]]:
                    hits = search(scope, q["question"], [qvec[q["id"]], *extra], use_units, rerank, fusion, second)
                    return [(h.chunk.file_name, h.chunk.pages) for h in hits]

                row[label] = evaluate(questions, rank)
                if args.expansion and label in ("hybrid", "+S+U"):
                    answers = embedder.embed([hyde[q["question"]] for q in questions])
                    avec = {q["id"]: v for q, v in zip(questions, answers, strict=True)}
                    row[label + "+E"] = evaluate(questions, lambda q, r=rank, a=avec: r(q, extra=(a[q["id"]],)))
                floors[(split, label)] = (scope, use_units, rerank)
            table[split] = row
            embedder.save()
            if second_embedder is not None:
                second_embedder.save()
        out["embedders"][name] = {"table": _compact(table, args.show_misses),
                                  "relevance_floor": _floors(floors, splits, off_topic, embedder),
                                  "embedded_now": embedder.new, "embed_s": round(embedder.embed_s, 1)}
        embedder.save()
    print(json.dumps(out, indent=1))


def _tutorial_rank(indexes: dict, embedder: CachedEmbedder, question: str) -> list[tuple[str, tuple[int, ...]]]:
    query = embedder.embed([question])[0]
    scored = [(float(s), name, page) for name, index in indexes.items()
              for s, page in zip(index.vectors @ query, index.pages, strict=True)]
    scored.sort(key=lambda item: -item[0])
    return [(name, (page,)) for _, name, page in scored[:MRR_DEPTH]]


def _floors(floors: dict, splits: dict, off_topic: dict[str, list[str]], embedder: CachedEmbedder) -> dict:
    """Per pipeline: the floor calibrated on dev questions, and at it each split's off-topic refusal
    rate and on-topic false-refusal rate."""
    if "dev" not in splits:
        return {}
    result = {}
    for label in sorted({label for _, label in floors}):
        best, off = {}, {}
        for split, questions in splits.items():
            scope, units, _ = floors[(split, label)]
            best[split] = [_best_cosine(scope, v, units) for v in embedder.embed([q["question"] for q in questions])]
            off[split] = [_best_cosine(scope, v, units) for v in embedder.embed(off_topic.get(split, []))]
        floor = calibrate_floor(best["dev"], off["dev"])
        entry: dict = {"floor": floor}
        for split in splits:
            entry[f"{split}_off_topic_refused"] = round(float(np.mean([s < floor for s in off[split]])), 3) \
                if off[split] else None
            entry[f"{split}_false_refusal"] = round(float(np.mean([s < floor for s in best[split]])), 3)
        result[label] = entry
    return result


def _best_cosine(scope: Scope, vector: np.ndarray, units: bool) -> float:
    scores = scope.vectors @ vector
    if units:
        scores = parent_scores(scores, scope.unit_vectors @ vector, scope.unit_parents)
    return float(scores.max()) if len(scores) else 0.0


def _compact(table: dict, misses: bool) -> dict:
    return {split: {label: {k: v for k, v in r.items() if misses or k != "misses"} for label, r in row.items()}
            for split, row in table.items()}


if __name__ == "__main__":
    main()
