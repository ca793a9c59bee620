"""The second stage (PHOBOS_RERANKER) through RagEngine: the sub-passage re-scorer with the real embedder,
and a real sentence-transformers CrossEncoder loaded from a tiny random-weight BERT built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.ingest import IngestLimits, ingest_document
from core.rag import RagEngine
from core.rerank import RERANK_CANDIDATES, CrossEncoderReranker, SubPassageReranker, make_reranker
from core.scope import Scope
from tests.pdfs import FACT_PAGES, pdf_with_pages
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=40, overlap_tokens=0)
QUESTIONS = {"Who cleans the lamp of the lighthouse?": 1, "When is the honey harvested?": 2,
             "Why does the air smell of rotten eggs near the volcano?": 3,
             "How much is a sleeper cabin on the night train?": 4}


def build_tiny_cross_encoder(folder: Path) -> Path:
    """A BERT sequence classifier with one output (a cross-encoder's shape), random weights, own vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted({w.strip(".,?").lower() for text in [*FACT_PAGES, *QUESTIONS] for w in text.split()})
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def facts_engine(redis_client, embedder, reranker) -> tuple[RagEngine, Scope]:  # type: ignore[no-untyped-def]
    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "w", "rerank")
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", scope.key, embedder, store, LIMITS)
    return RagEngine(embedder, store, top_k=3, reranker=reranker), scope


def test_an_empty_setting_is_no_reranker_and_subpassage_uses_the_embedder(embedder) -> None:
    assert make_reranker("", embedder) is None and make_reranker("off", embedder) is None
    assert isinstance(make_reranker("subpassage", embedder), SubPassageReranker)


def test_the_subpassage_reranker_keeps_the_right_page_first(redis_client, embedder) -> None:
    engine, scope = facts_engine(redis_client, embedder, make_reranker("subpassage", embedder))
    for question, page in QUESTIONS.items():
        hits = engine.retrieve(question, scope)
        assert len(hits) == 3 and page in hits[0].chunk.pages, question
        assert all(-1.0 <= hit.score <= 1.0 for hit in hits)  # scores stay cosines for the relevance floor


def test_a_cross_encoder_orders_the_first_stage_candidates_by_its_own_scores(redis_client, embedder,
                                                                            tmp_path) -> None:
    reranker = make_reranker(str(build_tiny_cross_encoder(tmp_path)), embedder)
    assert isinstance(reranker, CrossEncoderReranker)
    engine, scope = facts_engine(redis_client, embedder, reranker)
    question = "How much is a sleeper cabin on the night train?"
    index = engine.index_for(scope)
    candidates = index.hybrid_search(embedder.embed([question])[0], question, RERANK_CANDIDATES)
    scores = reranker.scores(question, [hit.chunk.indexed_text() for hit in candidates])
    expected = [candidates[i].chunk for i in np.argsort(-scores, kind="stable")[:3]]
    assert [hit.chunk for hit in engine.retrieve(question, scope)] == expected
