"""Retrieval with the real embedder over real PDFs stored in a real Redis."""

import json
import subprocess
import sys

from core.ingest import IngestLimits, ingest_document
from core.rag import RagEngine
from core.scope import Scope
from tests.conftest import ROOT, phobos_env
from tests.pdfs import FACT_PAGES, pdf_with_pages
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=60, overlap_tokens=10)
QUESTIONS = {
    "When does the overnight train depart and how much is a cabin?": 4,
    "What colour is the crater lake?": 3,
    "How are the queen bees marked?": 2,
    "Who made the lighthouse lens?": 1,
}


def test_retrieval_finds_the_page_holding_the_answer(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "w", "c")
    result = ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", scope.key, embedder, store, LIMITS)
    assert result.info.pages == 4 and not result.already_indexed
    engine = RagEngine(embedder, store)
    for question, page in QUESTIONS.items():
        top = engine.retrieve(question, scope, k=1)[0]
        assert top.chunk.file_name == "facts.pdf"
        assert page in top.chunk.pages, question


def test_same_bytes_again_is_not_re_embedded(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    data = pdf_with_pages(FACT_PAGES)
    first = ingest_document(data, "facts.pdf", "test:w:c", embedder, store, LIMITS)
    again = ingest_document(data, "facts-copy.pdf", "test:w:c", embedder, store, LIMITS)
    assert again.already_indexed and again.info == first.info
    assert "already indexed" in again.summary()


def test_documents_never_cross_channels(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", "test:w:c1", embedder, store, LIMITS)
    engine = RagEngine(embedder, store)
    assert engine.retrieve("lighthouse lens", Scope("test", "w", "c2")) == []
    assert engine.retrieve("lighthouse lens", Scope("test", "w", "c1", "thread-1")) != []


def test_phobos_search_cli_prints_the_right_pages(redis_server, redis_client, tmp_path) -> None:
    pdf = tmp_path / "facts.pdf"
    pdf.write_bytes(pdf_with_pages(FACT_PAGES))
    env = phobos_env(redis_server.url, PHOBOS_CHUNK_TOKENS="60")
    cli = [sys.executable, "-m", "phobos"]
    ingested = subprocess.run([*cli, "ingest", str(pdf), "--scope", "test:w:cli"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    assert ingested.returncode == 0, ingested.stderr
    assert "Indexed facts.pdf: 4 pages" in ingested.stdout
    searched = subprocess.run([*cli, "search", "--scope", "test:w:cli", "--k", "2", "--json"], env=env, cwd=ROOT,
                              input="\n".join(QUESTIONS) + "\n", capture_output=True, text=True, timeout=300)
    assert searched.returncode == 0, searched.stderr
    results = [json.loads(line) for line in searched.stdout.splitlines()]
    assert [r["question"] for r in results] == list(QUESTIONS)
    for result in results:
        top = result["hits"][0]
        assert top["file"] == "facts.pdf"
        assert QUESTIONS[result["question"]] in top["pages"]
        assert set(top) == {"file", "pages", "score", "text"}


def test_a_question_the_documents_do_not_cover_gets_no_sources(redis_client, embedder) -> None:
    from core.rag import NOT_COVERED_REPLY
    from phobos.runtime import relevance_floor
    from phobos.settings import Settings

    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "w", "floor")
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", scope.key, embedder, store, LIMITS)
    engine = RagEngine(embedder, store, min_relevance=relevance_floor(Settings()))
    assert engine.context("What are the side effects of ibuprofen?", scope) == []
    assert engine.context("Who made the lighthouse lens?", scope) != []
    assert "don't seem to cover" in NOT_COVERED_REPLY
