"""The worker's scope indexes: a byte-bounded LRU, and thread+channel questions searched without merging."""

import numpy as np

from core.backends.echo import EchoGenerator
from core.index import ScopeIndex
from core.ingest import IngestLimits, ingest_document
from core.joined import JoinedIndex
from core.rag import RagEngine
from core.registry import ModelRegistry, ModelSpec
from core.scope import Scope
from jobs import keys
from jobs.protocol import Job, JobKind
from tests.pdfs import FACT_PAGES, pdf_with_pages
from workers.index_cache import IndexCache
from workers.settings import WorkerSettings
from workers.store import RedisDocumentStore
from workers.worker import Worker

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=60, overlap_tokens=10)
THREAD_PAGES = [
    "Orchard ledger. The cider press in the old barn was rebuilt in 1998 and squeezes two tonnes of apples "
    "a day during the October harvest.",
    "Harbour rules. Fishing boats must moor on the west quay after sunset, and the harbour master rings a "
    "brass bell at six every morning.",
]
CHANNEL_QUESTIONS = {"Who made the lighthouse lens?": 1, "How are the queen bees marked?": 2,
                     "What colour is the crater lake?": 3}
THREAD_QUESTIONS = {"When was the cider press rebuilt?": 1, "Which quay do the fishing boats moor on after sunset?": 2}


def _thread_and_channel(redis_client, embedder) -> tuple[RedisDocumentStore, Scope]:
    store = RedisDocumentStore(redis_client)
    thread = Scope("test", "w", "c", "thread-1")
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", thread.channel_scope.key, embedder, store, LIMITS)
    ingest_document(pdf_with_pages(THREAD_PAGES), "thread.pdf", thread.key, embedder, store, LIMITS)
    return store, thread


def test_a_thread_question_finds_thread_and_channel_passages_without_a_merged_copy(redis_client, embedder) -> None:
    store, thread = _thread_and_channel(redis_client, embedder)
    engine = RagEngine(embedder, store)
    assert isinstance(engine.index_for(thread), JoinedIndex)
    for question, page in CHANNEL_QUESTIONS.items():
        top = engine.retrieve(question, thread, k=1)[0]
        assert (top.chunk.file_name, page in top.chunk.pages) == ("facts.pdf", True), question
    for question, page in THREAD_QUESTIONS.items():
        top = engine.retrieve(question, thread, k=1)[0]
        assert (top.chunk.file_name, page in top.chunk.pages) == ("thread.pdf", True), question
    # The answering path reads neighbours and passages across both parts too.
    passages = engine.context("When was the cider press rebuilt?", thread)
    assert passages and passages[0].chunk.file_name == "thread.pdf"
    # Only the two scope indexes are cached: nothing per thread+channel pair.
    assert len(store.cache) == 2


def test_joined_search_ranks_as_one_merged_index_would(redis_client, embedder) -> None:
    store, thread = _thread_and_channel(redis_client, embedder)
    parts = [store.load_index(key, embedder.dim, embedder.name) for key in thread.search_keys()]
    joined = JoinedIndex(parts)
    merged = ScopeIndex([c for p in parts for c in p.chunks], np.vstack([p.vectors for p in parts]))
    for question in [*CHANNEL_QUESTIONS, *THREAD_QUESTIONS]:
        query = embedder.embed([question])[0]
        # Dense scores are exact cosines, so the order is the merged one (up to float rounding).
        dense_joined = joined.hybrid_search(query, question, 5, "dense")
        dense_merged = merged.hybrid_search(query, question, 5, "dense")
        assert [h.chunk for h in dense_joined] == [h.chunk for h in dense_merged]
        assert np.allclose([h.score for h in dense_joined], [h.score for h in dense_merged], atol=1e-5)
        # Hybrid: each part's BM25 has its own statistics; the best passage is the same.
        assert joined.hybrid_search(query, question, 1)[0].chunk == merged.hybrid_search(query, question, 1)[0].chunk
    for row in range(len(merged.chunks)):
        assert np.array_equal(joined.vector(row), merged.vector(row))
        chunk = merged.chunks[row]
        assert joined.row_of(chunk.doc_id, chunk.ordinal) == row


def test_the_cache_keeps_the_most_recent_scopes_within_its_bytes(redis_client, embedder) -> None:
    ingest = RedisDocumentStore(redis_client)
    data = pdf_with_pages(FACT_PAGES)
    scopes = [f"test:w:c{i}" for i in range(4)]
    for scope in scopes:
        ingest_document(data, "facts.pdf", scope, embedder, ingest, LIMITS)
    one = ingest.load_index(scopes[0], embedder.dim, embedder.name).nbytes()
    store = RedisDocumentStore(redis_client, cache_max_bytes=int(2.5 * one))
    for scope in scopes:
        store.load_index(scope, embedder.dim, embedder.name)
        assert store.cache.nbytes <= store.cache.max_bytes
    assert len(store.cache) == 2
    kept = store.load_index(scopes[3], embedder.dim, embedder.name)
    assert store.load_index(scopes[3], embedder.dim, embedder.name) is kept  # cached
    assert store.load_index(scopes[0], embedder.dim, embedder.name) is not None  # evicted, read again


def test_a_changed_scope_drops_its_stale_index(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", "test:w:v", embedder, store, LIMITS)
    before = store.load_index("test:w:v", embedder.dim, embedder.name)
    held = store.cache.nbytes
    ingest_document(pdf_with_pages(THREAD_PAGES), "thread.pdf", "test:w:v", embedder, store, LIMITS)
    after = store.load_index("test:w:v", embedder.dim, embedder.name)
    assert after is not before and {c.file_name for c in after.chunks} == {"facts.pdf", "thread.pdf"}
    assert len(store.cache) == 1 and store.cache.nbytes == after.nbytes() > held


def test_an_index_is_measured_again_once_its_bm25_is_built(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", "test:w:b", embedder, store, LIMITS)
    index = store.load_index("test:w:b", embedder.dim, embedder.name)
    estimated = store.cache.nbytes
    assert estimated > index.vectors.nbytes + sum(len(c.text) for c in index.chunks)
    index.lexical()
    store.load_index("test:w:b", embedder.dim, embedder.name)
    assert store.cache.nbytes == index.nbytes() > index.vectors.nbytes


def test_an_index_bigger_than_the_whole_budget_is_served_but_not_kept(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client, cache_max_bytes=1000)
    ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", "test:w:big", embedder, store, LIMITS)
    assert store.load_index("test:w:big", embedder.dim, embedder.name).chunks
    assert len(store.cache) == 0 and store.cache.nbytes == 0


def test_cache_alone_evicts_least_recently_used() -> None:
    cache = IndexCache(max_bytes=10_000)
    index = ScopeIndex([], np.zeros((3, 384), dtype=np.float32))  # 4,608 bytes of vectors
    cache.put("a", 1, index)
    cache.put("b", 1, ScopeIndex([], np.zeros((3, 384), dtype=np.float32)))
    assert cache.get("a", 1) is index  # "a" is now the most recent
    cache.put("c", 1, ScopeIndex([], np.zeros((3, 384), dtype=np.float32)))
    assert cache.get("b", 1) is None and cache.get("a", 1) is index and cache.get("c", 1) is not None
    assert cache.get("a", 2) is None and len(cache) == 1  # another version: the stale one is dropped

def test_status_tells_what_the_workers_index_cache_holds(redis_client) -> None:
    spec = ModelSpec(name="echo", backend="echo")
    config = WorkerSettings(default_model="echo", worker_id="w",
                          index_cache_max_bytes=1000)
    worker = Worker(redis_client, NoEmbedder(), {"echo": EchoGenerator(spec)},  # type: ignore[arg-type]
                    ModelRegistry({"echo": spec}), config, ingest_limits=IngestLimits(1, 1, 10, 0))
    status = Job(id="status:1", kind=JobKind.STATUS, scope=Scope("slack", "T1", "C1"), user="U1",
                 reply_to=keys.reply_stream("cache"))
    worker.ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": status.to_json()})
    worker.run(burst=True)
    (_, fields), = redis_client.xrange(keys.reply_stream("cache"))
    assert "This worker (w) holds 0 scope index(es) in 0 of 1,000 bytes." in fields[b"event"].decode()


class NoEmbedder:
    name, dim, max_tokens = "none", 4, 10
