"""Small matching units: sentences packed to about 100 tokens, each pointing at its parent passage.

A 250-token passage covers several points, and its one vector blurs them; a question about one of
them matches a small unit far better. The unit is only for matching: the search returns the parent
passage, so the model still sees the whole context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.chunking import split_sentences
from core.documents import Chunk

UNIT_TOKENS = 100  # most embedder tokens in one matching unit


def matching_units(chunks: Sequence[Chunk], count_tokens: Callable[[list[str]], list[int]],
                   unit_tokens: int = UNIT_TOKENS) -> tuple[list[str], np.ndarray]:
    """The units of every chunk that holds more than one, as (texts to embed, parent row of each).

    A unit's text carries its chunk's section path like the chunk's own indexed text does. A chunk
    that fits in one unit has none: its own vector already is that unit.
    """
    texts: list[str] = []
    parents: list[int] = []
    for row, chunk in enumerate(chunks):
        sentences = split_sentences(chunk.text)
        counts = count_tokens(sentences) if sentences else []
        if sum(counts) <= unit_tokens:
            continue
        groups: list[list[str]] = [[]]
        size = 0
        for sentence, tokens in zip(sentences, counts, strict=True):
            if groups[-1] and size + tokens > unit_tokens:
                groups.append([])
                size = 0
            groups[-1].append(sentence)
            size += tokens
        for group in groups:
            text = " ".join(group)
            texts.append(f"{chunk.section}\n{text}" if chunk.section else text)
            parents.append(row)
    return texts, np.asarray(parents, dtype=np.int64)


def parent_scores(chunk_scores: np.ndarray, unit_scores: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Each chunk's best cosine: its own, or that of its best unit."""
    best = np.array(chunk_scores, dtype=np.float32, copy=True)
    if len(parents):
        np.maximum.at(best, parents, unit_scores.astype(np.float32))
    return best
