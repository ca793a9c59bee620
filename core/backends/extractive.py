"""A generator without a language model: it answers with the sentences of the sources that answer, verbatim.

Fast, deterministic and never invents: for machines too small for an LLM (the offline default, chosen by
``bench/answer_quality.py``), and for tests of everything around the model.

Which sentences: every sentence of every numbered source is scored by the question's content words it
shares (each weighted by how rare it is among the sources' sentences, so "function" counts less than
"typeof"), plus a small bonus for the retriever's rank. The best sentences are quoted with the sentence
after each (an answer often continues there), grouped per source in the document's order, each group
cited by its number, until the word budget is spent. With no shared word at all it falls back to the
top sources' opening words, as before.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Sequence

from core.claims.terms import content_stems
from core.generation import ChatMessage, GenerationParams
from core.prompt import QUESTION_HEADER, sources_in
from core.registry import ModelSpec

QUOTED_SOURCES = 2  # the fallback: opening words of this many top sources
NO_SOURCES_REPLY = "I can only quote shared documents, and there are none to quote for this question."
RANK_BONUS = 0.5  # added to the best source's sentences, falling linearly to 0 for the last source
FOLLOWING_SENTENCES = 1  # quoted after each chosen sentence
SENTENCE_OVERRUN_WORDS = 40  # words past the budget allowed to finish the sentence it runs out in
MIN_SENTENCE_WORDS = 4  # shorter pieces (headings, page numbers) are not chosen on their own
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9>])")


class ExtractiveGenerator:
    def __init__(self, spec: ModelSpec):
        self.name = spec.name
        self.context_tokens = spec.context_tokens

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str]:
        sources = sources_in(messages)
        if not sources:
            yield NO_SOURCES_REPLY
            return
        for piece in extract(question_in(messages), [(n, text) for n, _label, text in sources],
                             params.max_new_tokens):
            if cancel is not None and cancel.is_set():
                return
            yield piece

    def close(self) -> None:
        pass


def question_in(messages: Sequence[ChatMessage]) -> str:
    user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    _, found, question = user.rpartition("\n" + QUESTION_HEADER)
    return question.strip() if found else ""


def extract(question: str, sources: Sequence[tuple[int, str]], words_budget: int) -> Iterator[str]:
    """The answer's pieces (a citation, then word by word): see the module docstring."""
    sentences = [(rank, number, i, sentence) for rank, (number, text) in enumerate(sources)
                 for i, sentence in enumerate(s for s in _SENTENCE_END.split(text.strip()) if s)]
    chosen = _choose(question, sentences, len(sources), words_budget)
    if not chosen:
        yield from _openings(sources, words_budget)
        return
    words_left = words_budget
    for number in dict.fromkeys(number for _rank, number, _i, _s in chosen):  # sources in order of first choice
        picked = sorted((i, s) for _rank, n, i, s in chosen if n == number)
        yield f"[{number}] "
        previous = None
        for i, sentence in picked:
            if words_left <= 0:
                break
            if previous is not None and i != previous + 1:
                yield "… "
            previous = i
            # The budget ends where a sentence ends: the one it runs out in is finished, unless it is a run-on
            # (a table or a listing read as one sentence).
            words = sentence.split()[:words_left + SENTENCE_OVERRUN_WORDS]
            words_left -= len(words)
            for word in words:
                yield word + " "
        yield "\n"
        if words_left <= 0:
            return


def _choose(question: str, sentences: list[tuple[int, int, int, str]], n_sources: int,
            words_budget: int) -> list[tuple[int, int, int, str]]:
    asked = content_stems(question)
    stems = [content_stems(s) for *_, s in sentences]
    frequency: dict[str, int] = {}
    for found in stems:
        for stem in found & asked:
            frequency[stem] = frequency.get(stem, 0) + 1
    weight = {stem: math.log(1 + len(sentences) / count) for stem, count in frequency.items()}
    scored = []
    for position, ((rank, _number, _i, sentence), found) in enumerate(zip(sentences, stems, strict=True)):
        overlap = sum(weight[s] for s in found & asked)
        if overlap > 0 and len(sentence.split()) >= MIN_SENTENCE_WORDS:
            scored.append((overlap + RANK_BONUS * (1 - rank / max(1, n_sources)), position))
    chosen: set[int] = set()
    words = 0
    for _score, position in sorted(scored, reverse=True):
        if words >= words_budget:
            break
        for taken in range(position, position + 1 + FOLLOWING_SENTENCES):
            same_source = taken < len(sentences) and sentences[taken][1] == sentences[position][1]
            if same_source and taken > position and len(sentences[taken][3].split()) < 2:
                break  # a lone "4." or page number: the next section starts, it is no context for this one
            if same_source and taken not in chosen:
                chosen.add(taken)
                words += len(sentences[taken][3].split())
    best: dict[int, float] = {}  # source number -> its best sentence's score: the sources' order
    for score, position in scored:
        number = sentences[position][1]
        best[number] = max(score, best.get(number, score))
    return [sentences[p] for p in sorted(chosen, key=lambda p: (-best[sentences[p][1]], p))]


def _openings(sources: Sequence[tuple[int, str]], words_budget: int) -> Iterator[str]:
    words_left = words_budget
    for number, text in sources[:QUOTED_SOURCES]:
        words = text.split()[:words_left]
        words_left -= len(words)
        yield f"[{number}] "
        for word in words:
            yield word + " "
        yield "\n"
        if words_left <= 0:
            return
