"""A source cut into units a claim is compared with: each sentence and each run of two, the few worth
embedding for one claim, and the closest ones to a question (the quote an unsupported answer becomes)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from core.claims.terms import SPACE
from core.embedding import Embedder

# Sentences inside a source: PDF text wraps lines mid-sentence, so line breaks are spaces here.
_SOURCE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
# Slides and lists come out of a PDF as one line of bullets ("Login Nodes · Edit, compile · Processes over 30
# CPU-minutes are killed"): each bullet is a statement of its own, and the whole line would blur it.
_BULLET_SEPARATOR = re.compile(r"\s+[·•▪●◦‣]\s+")
SOURCE_WINDOW_SENTENCES = (1, 2)  # units: each sentence, and each run of two
MAX_UNIT_CHARS = 600  # about 128 tokens: a longer unit (a table dump, a code listing) is cut
CANDIDATES_PER_WIDTH = 3  # units of each width embedded per claim (those sharing most of its words)


def source_units(sources: Sequence[str], widths: Sequence[int] = SOURCE_WINDOW_SENTENCES, bullets: bool = True
                  ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each source's sentences (and bullets, with ``bullets``) and windows of consecutive ones; the source and
    width of each."""
    units: list[str] = []
    owners: list[int] = []
    sizes: list[int] = []
    for number, source in enumerate(sources):
        sentences = [piece for sentence in _SOURCE_SENTENCE_END.split(SPACE.sub(" ", source).strip())
                     for piece in (_BULLET_SEPARATOR.split(sentence) if bullets else [sentence]) if piece]
        seen: set[str] = set()
        for width in widths:
            for i in range(max(1, len(sentences) - width + 1)):
                unit = " ".join(sentences[i:i + width])[:MAX_UNIT_CHARS]
                if unit and unit not in seen:
                    seen.add(unit)
                    units.append(unit)
                    owners.append(number)
                    sizes.append(width)
    return units, np.asarray(owners, dtype=np.int64), np.asarray(sizes, dtype=np.int64)


def candidate_units(claim: set[str], against: list[int], unit_stems: list[set[str]], owners: np.ndarray,
                     widths: np.ndarray) -> list[int]:
    """The units worth embedding for one claim: per window width, the few sharing most of its words.

    Embedding every sentence and window of five long sources costs seconds on a CPU; the unit that
    says what a claim says nearly always shares its words, so only the best few by overlap are embedded.
    """
    allowed = set(against)
    chosen: list[int] = []
    for width in SOURCE_WINDOW_SENTENCES:
        ranked = sorted((u for u in range(len(unit_stems)) if owners[u] in allowed and widths[u] == width),
                        key=lambda u: (-len(claim & unit_stems[u]), len(unit_stems[u])))
        chosen += ranked[:CANDIDATES_PER_WIDTH]
    return chosen


QUOTE_MAX_CHARS = 300  # a fallback quote: one or two sentences, cut at this length
QUOTE_MIN_WORDS = 8  # shorter source sentences (titles, headings) are no answer to quote


def closest_passages(question: str, sources: Sequence[str], embedder: Embedder, count: int) -> list[tuple[int, str]]:
    """(source number, quote) for the ``count`` sentences or pairs of sentences closest to ``question``,
    closest first: one per source while there are sources left, then more from the same ones, never two
    that overlap. Fragments shorter than ``QUOTE_MIN_WORDS`` (a title, a heading) are not quoted."""
    units, owners, _ = source_units(sources, widths=(1, 2), bullets=False)  # a quote keeps a slide's title
    rows = [r for r, unit in enumerate(units) if len(unit.split()) >= QUOTE_MIN_WORDS] or list(range(len(units)))
    if not rows:
        return []
    vectors = embedder.embed([question, *(units[r] for r in rows)])  # (1 + rows, dim)
    order = [rows[i] for i in np.argsort(-(vectors[1:] @ vectors[0]))]
    chosen: list[int] = []
    for one_per_source in (True, False):
        for row in order:
            if len(chosen) == count:
                break
            taken_sources = {int(owners[c]) for c in chosen}
            if row in chosen or (one_per_source and int(owners[row]) in taken_sources):
                continue
            if any(units[row] in units[c] or units[c] in units[row] for c in chosen):
                continue
            chosen.append(row)
    quotes = []
    for row in chosen:
        quote = units[row]
        if len(quote) > QUOTE_MAX_CHARS:
            quote = quote[:QUOTE_MAX_CHARS].rsplit(" ", 1)[0] + " …"
        quotes.append((int(owners[row]) + 1, quote))
    return quotes
