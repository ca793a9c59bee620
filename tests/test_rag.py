"""RagEngine with the real embedder and Redis store, and a scripted generator standing in for an LLM
whose output we need to control (an empty answer, a specific citation)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from core.embedders import choose_embedder
from core.generation import ChatMessage, GenerationParams
from core.ingest import IngestLimits, ingest_document
from core.rag import EMPTY_ANSWER_REPLY, NOT_COVERED_REPLY, RagEngine
from core.scope import Scope
from tests.pdfs import FACT_PAGES, pdf_with_pages
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=40, overlap_tokens=0)


class ScriptedGenerator:
    name = "scripted"
    context_tokens = 4096

    def __init__(self, reply: str):
        self.reply = reply
        self.prompts: list[list[ChatMessage]] = []

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str]:
        self.prompts.append(messages)
        yield from self.reply.split(" ") if self.reply else []

    def close(self) -> None:
        pass


def engine_with_facts(redis_client, embedder, min_relevance: float = 0.0) -> tuple[RagEngine, Scope]:
    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "w", "rag")
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", scope.key, embedder, store, LIMITS)
    return RagEngine(embedder, store, top_k=3, min_relevance=min_relevance), scope


def test_citations_follow_the_numbers_the_answer_uses(redis_client, embedder) -> None:
    engine, scope = engine_with_facts(redis_client, embedder)
    generator = ScriptedGenerator("It is turquoise [1].")
    answer = engine.answer("What colour is the crater lake?", scope, generator, GenerationParams(), lambda t: None)
    assert len(answer.citations) == 1 and 3 in answer.citations[0].pages
    assert "[1] (facts.pdf" in generator.prompts[0][-1].content  # sources are numbered with file and page


def test_an_empty_model_answer_is_replaced_by_a_clear_note(redis_client, embedder) -> None:
    engine, scope = engine_with_facts(redis_client, embedder)
    streamed: list[str] = []
    answer = engine.answer("What colour is the crater lake?", scope, ScriptedGenerator(""), GenerationParams(),
                           streamed.append)
    assert answer.text == EMPTY_ANSWER_REPLY and "".join(streamed) == EMPTY_ANSWER_REPLY
    assert answer.citations  # the passages it was given are still cited


def test_nothing_relevant_says_the_documents_do_not_cover_it(redis_client, embedder) -> None:
    engine, scope = engine_with_facts(redis_client, embedder, min_relevance=0.99)
    generator = ScriptedGenerator("should not be asked")
    answer = engine.answer("What colour is the crater lake?", scope, generator, GenerationParams(), lambda t: None)
    assert answer.text == NOT_COVERED_REPLY.format(files="facts.pdf")
    assert not answer.grounded and not generator.prompts


def test_an_overview_question_uses_the_opening_passages_despite_the_floor(redis_client, embedder) -> None:
    engine, scope = engine_with_facts(redis_client, embedder, min_relevance=0.99)
    generator = ScriptedGenerator("A fact sheet about several places [1].")
    answer = engine.answer("What is this document about?", scope, generator, GenerationParams(), lambda t: None)
    assert answer.grounded and generator.prompts
    assert answer.citations[0].pages[0] == 1  # the document's opening passage


def test_a_covered_question_also_shows_top_passages_just_under_the_floor(redis_client, embedder) -> None:
    engine, scope = engine_with_facts(redis_client, embedder)
    question = "What colour is the crater lake?"
    best, runner_up = sorted(engine.retrieve(question, scope), key=lambda hit: -hit.score)[:2]
    engine.min_relevance = best.score - 1e-4  # only the best passage clears the floor itself

    def pages_shown() -> set[int]:  # joined passages keep their first chunk's ordinal, but span all pages
        return {page for hit in engine.context(question, scope) for page in hit.chunk.pages}

    engine.passage_margin = 0.0
    without_margin = pages_shown()
    engine.passage_margin = best.score - runner_up.score + 1e-3
    with_margin = pages_shown()
    assert not set(runner_up.chunk.pages) <= without_margin
    assert with_margin >= without_margin | set(runner_up.chunk.pages)


def test_the_margin_never_answers_a_question_the_floor_refuses(redis_client, embedder) -> None:
    engine, scope = engine_with_facts(redis_client, embedder)
    question = "What colour is the crater lake?"
    best = max(hit.score for hit in engine.retrieve(question, scope))
    engine.min_relevance, engine.passage_margin = best + 0.01, 1.0  # every passage is within the margin
    generator = ScriptedGenerator("should not be asked")
    answer = engine.answer(question, scope, generator, GenerationParams(), lambda t: None)
    assert answer.text == NOT_COVERED_REPLY.format(files="facts.pdf")
    assert not answer.grounded and not generator.prompts


# One long passage: a sentence that answers, buried in a harbour log that does not. Its chunk's vector is
# mostly the log; the answering sentence alone is close to the question.
BURIED_ANSWER_PAGES = [
    "Harbour log, spring. The ferry timetable changed on the first of March, and the morning crossing now "
    "leaves at seven. Fishing boats moor on the west quay; the east quay is kept for the lifeboat. The "
    "harbour master records the tide heights twice a day and posts them outside the office. Diesel for "
    "the boats is sold at the fuel pontoon from eight until five. Visiting yachts pay a mooring fee by the "
    "night. The crater lake on Mount Kessler is turquoise because copper sulphate dissolves in its acidic "
    "water. The slipway was resurfaced in April, and the crane can lift boats of up to twelve tonnes. Net "
    "lofts above the fish market are let to the fishermen's cooperative. Gulls are fed only at the end of "
    "the breakwater, and the harbour office closes at noon on Saturdays.",
]


def engine_with_buried_answer(redis_client, embedder) -> tuple[RagEngine, Scope]:
    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "w", "rag-units")
    limits = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=250, overlap_tokens=0)
    ingest_document(pdf_with_pages(BURIED_ANSWER_PAGES), "harbour.pdf", scope.key, embedder, store, limits)
    return RagEngine(embedder, store, top_k=3), scope


def test_a_sentence_that_clears_the_unit_floor_covers_a_question_its_passage_does_not(redis_client,
                                                                                       embedder) -> None:
    engine, scope = engine_with_buried_answer(redis_client, embedder)
    question = "Why is the crater lake on Mount Kessler turquoise?"
    chunk_score = max(hit.score for hit in engine.retrieve(question, scope))
    engine.min_relevance = chunk_score + 0.01  # the whole passage is under the chunk floor

    engine.min_unit_relevance = 0.0  # no unit floor: refused, as before
    assert engine.context(question, scope) == []
    engine.min_unit_relevance = chunk_score + 0.01  # the same bar, cleared by the answering sentence alone
    generator = ScriptedGenerator("Copper sulphate dissolves in its acidic water [1].")
    answer = engine.answer(question, scope, generator, GenerationParams(), lambda t: None)
    assert answer.grounded and generator.prompts
    assert "copper sulphate" in generator.prompts[0][-1].content  # the passage is shown whole
    assert answer.citations and answer.citations[0].file_name == "harbour.pdf"


def test_the_unit_floor_does_not_answer_an_off_topic_question(redis_client, embedder) -> None:
    engine, scope = engine_with_buried_answer(redis_client, embedder)
    minilm = choose_embedder("minilm")  # the test embedder, with its calibrated floors
    engine.min_relevance, engine.min_unit_relevance = minilm.min_relevance, minilm.min_unit_relevance
    generator = ScriptedGenerator("should not be asked")
    answer = engine.answer("Can you recommend a recipe for banana bread?", scope, generator, GenerationParams(),
                           lambda t: None)
    assert answer.text == NOT_COVERED_REPLY.format(files="harbour.pdf")
    assert not answer.grounded and not generator.prompts
