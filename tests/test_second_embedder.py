"""The default second stage (PHOBOS_RERANKER=dense:mpnet): all-mpnet-base-v2, the claim check's model,
re-scores the first stage's top candidates, with real models, real PDFs and a real Redis."""

from __future__ import annotations

import threading
from typing import Any, cast

import numpy as np
import pytest

from core.documents import Hit
from core.embedders import choose_embedder
from core.embedding import Embedder
from core.ingest import IngestLimits, ingest_document
from core.model_settings import ModelSettings
from core.rag import RagEngine
from core.rerank import DENSE_RERANK_CANDIDATES, SecondEmbedderReranker, make_reranker
from core.retrieval_settings import RetrievalSettings
from core.scope import Scope
from phobos.runtime import load_claim_embedder, load_second_embedder
from phobos.settings import Settings
from tests.pdfs import slide_deck_pdf
from workers.environment import WorkerEnvironment
from workers.settings import WorkerSettings

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=250, overlap_tokens=30)
# A house-rules deck: each slide is its own passage (core.ingest reads landscape pages of little text so).
HOUSE_RULES = [
    ("Kitchen rules", ["Each tenant cleans the shared oven after use.",
                       "Dirty dishes left in the sink overnight are put in the lost and found box."]),
    ("Heating", ["The boiler room is on the ground floor.",
                 "Radiators are bled every October by the caretaker, and the thermostat is set to 20 degrees."]),
    ("Parking", ["Each flat has one numbered bay in the yard.",
                 "Visitors park on the street; the gate code changes on the first of each month."]),
    ("Waste", ["Recycling bins are emptied on Mondays and general waste on Thursdays.",
               "Bulky items such as sofas need a collection booked with the council."]),
    ("Noise", ["Quiet hours run from 22:00 to 07:00.",
               "Parties need the neighbours' agreement a week ahead, posted on the notice board by the lift."]),
    ("Pets", ["Cats and small dogs are allowed with the landlord's written consent.",
              "Dogs must be kept on a lead in the stairwell and the garden."]),
]
RULE_TEXTS = [f"{title}. {' '.join(lines)}" for title, lines in HOUSE_RULES]
# Paraphrases sharing almost no word with the rule that answers them, and that rule.
QUESTIONS = {"Who warms the flats up in autumn?": "Radiators are bled every October",
             "When is the rubbish collected?": "general waste on Thursdays",
             "Can I throw out an old couch?": "Bulky items such as sofas",
             "Is it fine to keep a puppy?": "small dogs are allowed",
             "How late may I play loud music?": "Quiet hours run from 22:00"}


@pytest.fixture(scope="module")
def mpnet(embedder) -> Embedder:  # type: ignore[no-untyped-def]
    """all-mpnet-base-v2, unpacked from its pinned wheels: the claim check's embedder, as a worker loads it."""
    return load_claim_embedder(Settings(), embedder)


def house_rules(redis_client, embedder, second: Embedder | None) -> tuple[RagEngine, Scope]:  # type: ignore[no-untyped-def]
    from workers.store import RedisDocumentStore

    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "w", "house")
    if not store.list_documents([scope.key]):
        ingest_document(slide_deck_pdf(HOUSE_RULES), "house-rules.pdf", scope.key, embedder, store, LIMITS)
    return RetrievalSettings(top_k=1, min_relevance=0.0).engine(embedder, store, second_embedder=second), scope


def test_the_second_embedder_finds_the_page_a_paraphrase_asks_about(redis_client, embedder, mpnet) -> None:  # type: ignore[no-untyped-def]
    first_only, scope = house_rules(redis_client, embedder, None)
    assert first_only.reranker is None  # dense:mpnet with no second model: the first stage alone
    first_texts = {q: first_only.retrieve(q, scope)[0].chunk.text for q in QUESTIONS}
    engine, _ = house_rules(redis_client, embedder, mpnet)
    assert isinstance(engine.reranker, SecondEmbedderReranker)
    for question, rule in QUESTIONS.items():
        hit = engine.retrieve(question, scope)[0]
        assert rule in hit.chunk.text, question
        # The score stays MiniLM's cosine, which the relevance floors were calibrated on.
        assert hit.score == pytest.approx(float(embedder.embed([hit.chunk.indexed_text()])[0]
                                                @ embedder.embed([question])[0]), abs=5e-3)
    # MiniLM and BM25 alone put the parking slide first ("flat" is its word); mpnet reads "warms" as heating.
    question = "Who warms the flats up in autumn?"
    assert "Each flat has one numbered bay" in first_texts[question]
    assert all(rule in first_texts[q] for q, rule in QUESTIONS.items() if q != question)


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder):
        self.inner, self.name, self.texts = inner, inner.name, 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_passages_seen_before_are_not_embedded_again(redis_client, embedder, mpnet) -> None:  # type: ignore[no-untyped-def]
    counting = CountingEmbedder(mpnet)
    engine, scope = house_rules(redis_client, embedder, cast(Embedder, counting))
    engine.retrieve("When is the rubbish collected?", scope)
    passages = min(DENSE_RERANK_CANDIDATES, len(HOUSE_RULES))
    assert counting.texts == passages + 1  # the candidates and the question
    engine.retrieve("Can I throw out an old couch?", scope)
    assert counting.texts == passages + 2  # the same candidates: only the new question


def test_a_full_cache_forgets_the_least_recently_used_passages(mpnet) -> None:  # type: ignore[no-untyped-def]
    reranker = SecondEmbedderReranker(mpnet, cache_vectors=2)
    texts = RULE_TEXTS[:3]
    first = reranker.passage_vectors(texts)
    assert first.shape == (3, 768)
    again = reranker.passage_vectors(texts[2:])
    np.testing.assert_allclose(again[0], first[2], atol=1e-6)


def test_a_first_stage_that_fused_by_rank_is_fused_by_rank_again(mpnet) -> None:  # type: ignore[no-untyped-def]
    from core.documents import Chunk

    chunks = [Chunk("d", "house-rules.pdf", text, i + 1, i + 1, i) for i, text in enumerate(RULE_TEXTS)]
    # No fused scores (a dense-only or reciprocal-rank first stage): the orders are fused, nothing is dropped.
    hits = [Hit(chunk, 0.5) for chunk in chunks]
    ranked = SecondEmbedderReranker(mpnet).rerank("Is it fine to keep a puppy?", hits)
    assert sorted(h.chunk.ordinal for h in ranked) == list(range(len(RULE_TEXTS)))
    # Last in the first stage, first by far for mpnet: it moves up, though rank fusion keeps it from the top.
    assert [h.chunk.ordinal for h in ranked].index(5) < 5


def test_dense_names_an_embedder_and_is_none_without_a_second_model(embedder, mpnet) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    assert settings.retrieval.reranker == "dense:mpnet" and settings.retrieval.second_embedder() == "mpnet"
    assert RetrievalSettings(reranker="subpassage").second_embedder() is None
    assert make_reranker("dense:mpnet", embedder) is None
    assert make_reranker("dense:mpnet", embedder, embedder) is None
    assert isinstance(make_reranker("dense:mpnet", embedder, mpnet), SecondEmbedderReranker)


def test_one_mpnet_serves_the_claim_check_and_the_second_stage(redis_client, embedder, mpnet) -> None:  # type: ignore[no-untyped-def]
    from core.registry import ModelRegistry
    from core.retrieval_settings import RetrievalSettings as Retrieval

    settings = Settings()
    assert load_second_embedder(settings, embedder, mpnet) is mpnet
    # The documents' own embedder named: no second stage; another reranker: none either.
    minilm = settings.model_copy(update={"retrieval": Retrieval(reranker="dense:minilm")})
    assert load_second_embedder(minilm, embedder, mpnet) is None
    off = settings.model_copy(update={"retrieval": Retrieval(reranker="")})
    assert load_second_embedder(off, embedder, mpnet) is None
    # Asks on several threads: the check and the second stage take turns through one serialised wrapper.
    env = WorkerEnvironment.build(redis_client, embedder, {}, ModelRegistry({}), WorkerSettings(concurrency=4),
                                  retrieval=Retrieval(), claim_embedder=mpnet, second_embedder=mpnet)
    reranker = cast(Any, env.engine.reranker)
    assert env.concurrency > 1 and reranker.embedder is env.claim_embedder is not mpnet


def test_missing_second_embedder_wheels_are_one_sentence_naming_the_fix(tmp_path, monkeypatch, embedder) -> None:  # type: ignore[no-untyped-def]
    import importlib
    import sys

    from phobos.commands.common import UsageError

    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    importlib.invalidate_caches()
    # The claim check on the documents' embedder, so only the second stage asks for mpnet.
    settings = Settings(state_dir=tmp_path)
    with pytest.raises(UsageError, match=r"second-stage embedder mpnet .* cannot be loaded: .*PHOBOS_RERANKER="):
        load_second_embedder(settings, embedder, None)


def test_a_question_only_the_second_embedder_finds_relevant_is_covered(redis_client, embedder, mpnet) -> None:  # type: ignore[no-untyped-def]
    from workers.store import RedisDocumentStore

    house_rules(redis_client, embedder, None)
    store, scope = RedisDocumentStore(redis_client), Scope("test", "w", "house")
    # A first floor no passage clears (MiniLM gives the heating slide 0.35): only mpnet's own floor covers it.
    alone = RagEngine(embedder, store, top_k=3, min_relevance=0.45)
    both = RagEngine(embedder, store, top_k=3, min_relevance=0.45, reranker=SecondEmbedderReranker(mpnet),
                     second_min_relevance=0.306)
    question = "Who warms the flats up in autumn?"
    assert alone.context(question, scope) == []
    shown = both.context(question, scope)
    assert any("Radiators are bled every October" in hit.chunk.text for hit in shown)
    # Off-topic for both embedders: still refused.
    assert both.context("What is the capital of Mongolia?", scope) == []


def loading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("load ")]


def test_a_ready_worker_loads_mpnet_in_the_background_once_and_a_lazy_one_does_not(redis_client, embedder) -> None:  # type: ignore[no-untyped-def]
    from phobos.runtime import LazyEmbedder, build_worker, load_registry

    settings = Settings()
    for thread in loading_threads():
        thread.join()
    lazy = build_worker(settings.model_copy(update={"models": ModelSettings(lazy_embedder=True)}), redis_client,
                        embedder, {}, load_registry(settings), "extractive")
    assert loading_threads() == []
    assert not cast(LazyEmbedder, lazy.env.claim_embedder).is_loaded

    worker = build_worker(settings, redis_client, embedder, {}, load_registry(settings), "extractive")
    threads = loading_threads()
    assert [t.name for t in threads] == [f"load {choose_embedder('mpnet').source}"]  # one model, two uses
    threads[0].join()
    mpnet = cast(LazyEmbedder, worker.env.claim_embedder)
    assert mpnet.is_loaded and cast(Any, worker.env.engine.reranker).embedder is mpnet


def test_a_background_load_that_fails_is_logged_and_raised_at_first_use(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from phobos.runtime import LazyEmbedder

    missing = LazyEmbedder(str(tmp_path / "no-such-model"), name="no-such-model")
    missing.load_in_background().join()
    assert not missing.is_loaded
    assert "embedder no-such-model could not be loaded ahead of use" in caplog.text
    with pytest.raises(FileNotFoundError):
        missing.embed(["a question"])
