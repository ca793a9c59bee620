"""Context assembly: turn ranked hits into the passages the model reads.

Neighbouring chunks of one document overlap by design (chunking repeats trailing sentences), so two
hits next to each other are joined into one passage without the repeated text. A hit's neighbour is
added when it is itself close to the question, since an answer often runs past a chunk boundary.
Passages are kept in rank order until the token budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.documents import Chunk, Hit, span_label
from core.index import SearchIndex

NEIGHBOUR_MIN_SHARE = 0.85  # a neighbour joins when its cosine is at least this share of the hit's


def assemble_context(hits: Sequence[Hit], index: SearchIndex, query_vector: np.ndarray,
                     count_tokens: Callable[[list[str]], list[int]], budget_tokens: int,
                     add_neighbours: bool = True) -> list[Hit]:
    """Passages for the prompt, best first: overlapping hits joined, helpful neighbours added, within
    ``budget_tokens`` (the best passage is always kept)."""
    chosen: dict[tuple[str, int], Hit] = {}  # (doc_id, ordinal) -> hit, in rank order
    for hit in hits:
        chosen.setdefault((hit.chunk.doc_id, hit.chunk.ordinal), hit)
    if add_neighbours:
        for hit in list(chosen.values()):
            for ordinal in (hit.chunk.ordinal - 1, hit.chunk.ordinal + 1):
                row = index.row_of(hit.chunk.doc_id, ordinal)
                key = (hit.chunk.doc_id, ordinal)
                if row is None or key in chosen:
                    continue
                score = float(index.vector(row) @ query_vector)
                if score >= NEIGHBOUR_MIN_SHARE * hit.score:
                    chosen[key] = Hit(index.chunks[row], score)
    passages = _join_runs(list(chosen.values()))
    kept: list[Hit] = []
    used = 0
    for passage, tokens in zip(passages, count_tokens([p.chunk.text for p in passages]), strict=True):
        if kept and used + tokens > budget_tokens:
            continue
        kept.append(passage)
        used += tokens
    return kept


def _join_runs(hits: list[Hit]) -> list[Hit]:
    """Join hits on consecutive chunks of one document into one passage, ranked by its best hit."""
    rank = {id(hit): i for i, hit in enumerate(hits)}
    by_doc: dict[str, list[Hit]] = {}
    for hit in hits:
        by_doc.setdefault(hit.chunk.doc_id, []).append(hit)
    passages: list[tuple[int, Hit]] = []
    for doc_hits in by_doc.values():
        doc_hits.sort(key=lambda h: h.chunk.ordinal)
        run = [doc_hits[0]]
        for hit in doc_hits[1:]:
            if hit.chunk.ordinal == run[-1].chunk.ordinal + 1:
                run.append(hit)
            else:
                passages.append(_passage(run, rank))
                run = [hit]
        passages.append(_passage(run, rank))
    return [hit for _, hit in sorted(passages, key=lambda pair: pair[0])]


def _passage(run: list[Hit], rank: dict[int, int]) -> tuple[int, Hit]:
    text = run[0].chunk.text
    for hit in run[1:]:
        text = join_overlapping(text, hit.chunk.text)
    first = run[0].chunk
    chunk = Chunk(first.doc_id, first.file_name, text, min(h.chunk.page_start for h in run),
                  max(h.chunk.page_end for h in run), first.ordinal,
                  span_label(first.location, run[-1].chunk.location), scope_key=first.scope_key)
    return min(rank[id(h)] for h in run), Hit(chunk, max(h.score for h in run))


def join_overlapping(first: str, second: str) -> str:
    """``first`` + ``second`` without the text that ends one and starts the other."""
    for size in range(min(len(first), len(second)), 0, -1):
        if first.endswith(second[:size]) and (size == len(second) or second[size] == " "):
            return first + second[size:]
    return f"{first} {second}"
