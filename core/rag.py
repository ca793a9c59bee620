"""Retrieval-augmented answering: retrieve from the scope, fit the prompt, stream, cite."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.context import assemble_context
from core.documents import Citation, Hit
from core.embedding import Embedder
from core.generation import ChatMessage, GenerationParams, Generator
from core.index import DocumentStore, SearchIndex
from core.intent import OPENING_CHUNKS_PER_DOCUMENT, is_overview_question
from core.joined import JoinedIndex
from core.prompt import cited_numbers, plain_messages, rag_messages
from core.rerank import Reranker
from core.scope import Scope
from core.units import matching_units, parent_scores

NO_DOCUMENTS_NOTE = ("No documents are shared in this conversation yet, so this answer does not come "
                     "from any file. Share a PDF here to ask about it.\n\n")
FILES_NAMED = 20  # a DM reads many channels: a reply names this many of the files it searched, then counts
EMPTY_ANSWER_REPLY = ("The model returned no text for this question. The passages it was given are listed "
                      "below; try rephrasing or another model (/models).")
# Sub-passages scored for relevance: a sentence or two. A 250-token chunk blurs the one sentence that
# answers a paraphrased question; 60 and 100 tokens were compared on the dev split, 60 found more.
RELEVANCE_UNIT_TOKENS = 60
NOT_COVERED_REPLY = ("The documents shared here don't seem to cover this. I searched: {files}. "
                     "Try rephrasing, or share a document that does.")


@dataclass(frozen=True)
class Answer:
    text: str
    citations: tuple[Citation, ...]
    sources: tuple[Hit, ...]  # what the model was shown
    grounded: bool  # False when the scope had no documents or nothing relevant


class RagEngine:
    """Answers questions in a scope from its documents. Holds no model; generators are passed in."""

    def __init__(self, embedder: Embedder, store: DocumentStore, top_k: int = 5, min_relevance: float = 0.0,
                 mode: str = "hybrid", context_tokens: int = 1500, history_tokens: int = 512,
                 reranker: Reranker | None = None, passage_margin: float = 0.0,
                 min_unit_relevance: float = 0.0, second_min_relevance: float = 0.0):
        self.embedder = embedder
        self.store = store
        self.top_k = top_k
        self.min_relevance = min_relevance  # a question whose best passage is under it is not covered
        # Once a question is covered, a passage among the top_k is shown down to min_relevance minus this:
        # the lexical ranking put it there, and the gold passage often scores just under the floor.
        self.passage_margin = passage_margin
        # The floor for a passage's best sub-passage (RELEVANCE_UNIT_TOKENS), 0 for none: a passage the
        # chunk floor turns away still counts when one of its sentences clears this. Sub-passages score
        # higher than whole chunks, on topic or not, so this floor is calibrated on its own.
        self.min_unit_relevance = min_unit_relevance
        # The floor for a second stage's own cosine (Hit.second_score), 0 for none: the larger embedder's
        # floor, calibrated for it. A passage either embedder finds relevant counts; a question neither
        # finds covered is still refused.
        self.second_min_relevance = second_min_relevance
        self.mode = mode  # "hybrid" (dense + BM25), "dense" or "lexical"
        self.context_tokens = context_tokens  # sources shown to the model, in embedder tokens
        self.history_tokens = history_tokens  # earlier turns shown to the model, in the generator's tokens
        self.reranker = reranker  # reorders the first stage's top candidates (core/rerank.py)

    def index_for(self, scope: Scope, reads: Sequence[str] = ()) -> SearchIndex:
        """The index of every scope a question in ``scope`` reads, joined without copying any: in a thread,
        the thread's and the channel's; from a DM, also the ``reads`` its adapter granted (one ranking
        over their union, scored as one scope's; see core/joined.py)."""
        keys = _search_keys(scope, reads)
        parts = self.store.load_indexes(keys, self.embedder.dim, self.embedder.name)
        return parts[0] if len(parts) == 1 else JoinedIndex(parts)

    def retrieve(self, question: str, scope: Scope, k: int | None = None, reads: Sequence[str] = ()) -> list[Hit]:
        """The top chunks for ``question``: dense and BM25 rankings fused. ``Hit.score`` is the cosine."""
        return self._search(question, scope, k, reads)[2]

    def context(self, question: str, scope: Scope, reads: Sequence[str] = ()) -> list[Hit]:
        """The passages to show the model: relevant hits, overlaps joined, neighbours added, in budget."""
        index, query, hits = self._search(question, scope, None, reads)
        # An overview question's opening passages are shown whatever the floors say (see core/intent.py).
        hits = _opening_passages(index, query) if is_overview_question(question) else self._relevant(hits, query)
        if not hits:
            return []
        return assemble_context(hits, index, query, self.embedder.count_tokens, self.context_tokens)

    def _relevant(self, hits: list[Hit], query: np.ndarray) -> list[Hit]:
        """The hits to show: none when the question is not covered (no passage clears the floor, nor any
        sub-passage the unit floor, nor any second-stage cosine the second embedder's floor), else those down
        to each floor minus ``passage_margin``."""
        chunk_floor, unit_floor, second_floor = self.min_relevance, self.min_unit_relevance, self.second_min_relevance
        covered = any(hit.score >= chunk_floor for hit in hits)
        shown = [hit.score >= chunk_floor - self.passage_margin for hit in hits]
        if second_floor:
            seconds = [hit.second_score for hit in hits]
            covered = covered or any(s is not None and s >= second_floor for s in seconds)
            shown = [ok or (s is not None and s >= second_floor - self.passage_margin)
                     for ok, s in zip(shown, seconds, strict=True)]
        if unit_floor and not all(shown):
            # Only the passages the chunk floor leaves out are split and embedded: most questions cost nothing.
            doubtful = [i for i, ok in enumerate(shown) if not ok]
            best = self._unit_scores([hits[i] for i in doubtful], query)
            covered = covered or bool((best >= unit_floor).any())
            for i, score in zip(doubtful, best.tolist(), strict=True):
                shown[i] = score >= unit_floor - self.passage_margin
        return [hit for hit, ok in zip(hits, shown, strict=True) if covered and ok]

    def _unit_scores(self, hits: Sequence[Hit], query: np.ndarray) -> np.ndarray:
        """Each hit's best cosine to ``query``: its own, or its best sub-passage's."""
        chunk_scores = np.array([hit.score for hit in hits], dtype=np.float32)
        texts, parents = matching_units([hit.chunk for hit in hits], self.embedder.count_tokens,
                                        RELEVANCE_UNIT_TOKENS)
        if not texts:
            return chunk_scores
        return parent_scores(chunk_scores, self.embedder.embed(texts) @ query, parents)

    def _search(self, question: str, scope: Scope, k: int | None,
                reads: Sequence[str] = ()) -> tuple[SearchIndex, np.ndarray, list[Hit]]:
        index = self.index_for(scope, reads)
        if not index.chunks:
            return index, np.zeros(self.embedder.dim, dtype=np.float32), []
        query = self.embedder.embed([question])[0]
        k = k or self.top_k
        if self.reranker is None:
            return index, query, index.hybrid_search(query, question, k, self.mode)
        candidates = index.hybrid_search(query, question, max(k, self.reranker.candidates), self.mode)
        return index, query, self.reranker.rerank(question, candidates)[:k]

    def answer(self, question: str, scope: Scope, generator: Generator, params: GenerationParams,
               on_delta: Callable[[str], None], history: Sequence[ChatMessage] = (),
               cancel: threading.Event | None = None, reads: Sequence[str] = ()) -> Answer:
        """Stream an answer through ``on_delta`` and return it whole with its citations.

        ``history`` is the conversation's earlier turns, oldest first; the oldest are left out beyond
        ``history_tokens``, and before any source when the prompt would not fit the model's window.
        ``reads``: from a DM, the other scopes the asker may read (see :meth:`index_for`).
        """
        history = fit_history(history, generator, self.history_tokens)
        documents = self.store.list_documents(_search_keys(scope, reads))
        if not documents:
            on_delta(NO_DOCUMENTS_NOTE)
            history = _drop_oldest_turns(lambda kept: plain_messages(question, kept), history, generator,
                                         generator.context_tokens - params.max_new_tokens)
            body = _collect(generator, plain_messages(question, history), params, on_delta, cancel)
            return Answer(NO_DOCUMENTS_NOTE + body, (), (), grounded=False)

        hits = self.context(question, scope, reads)
        if not hits:
            names = sorted({d.file_name for d in documents})
            files = ", ".join(names[:FILES_NAMED]) + (f" and {len(names) - FILES_NAMED} more"
                                                      if len(names) > FILES_NAMED else "")
            text = NOT_COVERED_REPLY.format(files=files)
            on_delta(text)
            return Answer(text, (), (), grounded=False)

        history = _drop_oldest_turns(lambda kept: rag_messages(question, hits, kept), history, generator,
                                     generator.context_tokens - params.max_new_tokens)
        hits = fit_sources(question, hits, history, generator, params.max_new_tokens)
        body = _collect(generator, rag_messages(question, hits, history), params, on_delta, cancel)
        if not body:  # small models sometimes stop at once; never leave the user with an empty message
            body = EMPTY_ANSWER_REPLY
            on_delta(body)
        return Answer(body, citations_for(body, hits), tuple(hits), grounded=True)


def _search_keys(scope: Scope, reads: Sequence[str]) -> list[str]:
    keys = scope.search_keys()
    return keys + [key for key in reads if key not in keys]


def _opening_passages(index: SearchIndex, query: np.ndarray) -> list[Hit]:
    """The first passages of each document in the index, in document order, scored by cosine."""
    opening = [row for row, chunk in enumerate(index.chunks) if chunk.ordinal < OPENING_CHUNKS_PER_DOCUMENT]
    return [Hit(index.chunks[row], float(index.vector(row) @ query)) for row in opening]


def fit_sources(question: str, hits: list[Hit], history: Sequence[ChatMessage], generator: Generator,
                answer_tokens: int) -> list[Hit]:
    """Drop the weakest sources until the prompt leaves ``answer_tokens`` of the model's window free."""
    budget = generator.context_tokens - answer_tokens
    kept = list(hits)
    while len(kept) > 1 and generator.count_tokens(rag_messages(question, kept, history)) > budget:
        kept.pop()
    return kept


def fit_history(history: Sequence[ChatMessage], generator: Generator, budget_tokens: int) -> list[ChatMessage]:
    """The most recent turns of ``history`` that take at most ``budget_tokens``; the oldest go first."""
    return _drop_oldest_turns(lambda kept: kept, history, generator, budget_tokens)


def _drop_oldest_turns(prompt: Callable[[list[ChatMessage]], list[ChatMessage]], history: Sequence[ChatMessage],
                       generator: Generator, budget_tokens: int) -> list[ChatMessage]:
    """Drop whole turns (a user message and the replies after it), oldest first, until ``prompt(kept)``
    fits ``budget_tokens``."""
    kept = list(history)
    while kept and generator.count_tokens(prompt(kept)) > budget_tokens:
        kept = kept[1:]
        while kept and kept[0].role != "user":
            kept = kept[1:]
    return kept


def citations_for(answer: str, hits: Sequence[Hit]) -> tuple[Citation, ...]:
    """The sources the answer cites by number; if it cites none, every source it was shown."""
    numbers = cited_numbers(answer, len(hits), [hit.chunk.text for hit in hits]) or list(range(1, len(hits) + 1))
    citations: list[Citation] = []
    for number in numbers:
        chunk = hits[number - 1].chunk
        citation = Citation.of(chunk)
        if citation not in citations:
            citations.append(citation)
    return tuple(citations)


def _collect(generator: Generator, messages: list[ChatMessage], params: GenerationParams,
             on_delta: Callable[[str], None], cancel: threading.Event | None) -> str:
    parts = []
    for piece in generator.stream(messages, params, cancel):
        parts.append(piece)
        on_delta(piece)
    return "".join(parts).strip()
