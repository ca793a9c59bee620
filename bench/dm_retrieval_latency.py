"""A DM question over a user's 500 channels (50 holding 10,000 chunks each) against one channel, as JSON.

What the worker does for a question before generating, through the real RedisDocumentStore on a real
(embedded) Redis: list the documents of every scope the question reads (one pipeline), load their
indexes (one MGET of versions, then the bounded index cache), and run one hybrid search over their
union (core/joined.py: dense + BM25, one fusion). The same for a question in one of those channels, in
the same run, and the ratio. Chunks are synthetic (random unit vectors; texts drawn from the words of
the bundled handbook) so both sides of the search do real work. The first DM question loads every
index from Redis ("cold"); the rest find them in the cache, sized here to hold the union
(``--cache-mb``; PHOBOS_INDEX_CACHE_MAX_BYTES in a worker). Query embedding is reported on its own.

    .venv/bin/python bench/dm_retrieval_latency.py [--channels 500] [--with-documents 50]
        [--chunks 10000] [--queries 200] [--out bench/results/dm_retrieval_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, concrete_embedder

from core.documents import Chunk, DocumentInfo
from core.rag import RagEngine
from core.scope import Scope
from jobs.connection import RedisOptions, redis_client
from phobos.redis_server import EmbeddedRedis
from workers.store import RedisDocumentStore

WORDS_PER_CHUNK = 40
SEED = 1
K = 5  # PHOBOS_TOP_K's default


def vocabulary() -> list[str]:
    import pymupdf

    with pymupdf.open(ROOT / "phobos" / "samples" / "phobos-handbook.pdf") as document:
        text = " ".join(page.get_text() for page in document)
    return re.findall(r"[A-Za-z][A-Za-z.]{2,}", text)  # with repeats: a natural word distribution


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2),
            "max": round(float(ms.max()), 2)}


def fill(store: RedisDocumentStore, scope_key: str, dim: int, chunks: int, words: list[str],
         rng: random.Random, generator: np.random.Generator) -> None:
    vectors = generator.standard_normal((chunks, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc_id = f"doc-{scope_key.rsplit(':', 1)[-1]}"
    texts = [" ".join(rng.choices(words, k=WORDS_PER_CHUNK)) for _ in range(chunks)]
    rows = [Chunk(doc_id, "report.pdf", text, i // 4 + 1, i // 4 + 1, i) for i, text in enumerate(texts)]
    info = DocumentInfo(doc_id, "report.pdf", scope_key, chunks // 4, chunks, time.time(), embedder="bench",
                        dim=dim)
    store.add_document(info, rows, vectors)


def timed(call, queries: list[tuple[str, np.ndarray]], cpu: list[float] | None = None) -> list[float]:  # type: ignore[no-untyped-def]
    """Wall seconds per call; with ``cpu``, also this process's CPU seconds per call (all its threads):
    what the call costs without waiting for a core on a busy machine."""
    times = []
    for question, vector in queries:
        started, started_cpu = time.perf_counter(), time.process_time()
        call(question, vector)
        times.append(time.perf_counter() - started)
        if cpu is not None:
            cpu.append(time.process_time() - started_cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=500)
    parser.add_argument("--with-documents", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cache-mb", type=int, default=4096)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dm_retrieval_latency.json"))
    args = parser.parse_args()
    from phobos.runtime import single_blas_thread
    from phobos.settings import Settings

    single_blas_thread()  # as a worker runs (phobos/runtime.py load_embedder)
    embedder = concrete_embedder(Settings())
    words = vocabulary()
    rng = random.Random(SEED)
    generator = np.random.default_rng(SEED)
    questions = [" ".join(rng.choices(words, k=rng.randint(5, 12))) + "?" for _ in range(args.queries)]
    vectors = embedder.embed(questions)
    queries = list(zip(questions, vectors, strict=True))
    embed_times = timed(lambda question, _v: embedder.embed([question]), queries[:50])

    class Named:  # the engine needs the embedder's name and dimension; queries come pre-embedded
        name, dim = "bench", embedder.dim

    dm = Scope("slack", "TBENCH", "DBENCH")
    channels = [Scope("slack", "TBENCH", f"C{n:05d}").key for n in range(args.channels)]
    with_documents = channels[:: max(1, args.channels // args.with_documents)][: args.with_documents]
    with tempfile.TemporaryDirectory() as state:
        embedded = EmbeddedRedis(Path(state))
        embedded.ensure_running()
        try:
            client = redis_client(embedded.url, RedisOptions())
            store = RedisDocumentStore(client, args.cache_mb * 1024 * 1024)
            started = time.perf_counter()
            for key in with_documents:
                fill(store, key, embedder.dim, args.chunks, words, rng, generator)
            fill_s = time.perf_counter() - started
            engine = RagEngine(Named(), store, top_k=K)  # type: ignore[arg-type]
            keys = [*dm.search_keys(), *channels]

            def dm_question(question: str, vector: np.ndarray) -> None:
                store.list_documents(keys)
                engine.index_for(dm, channels).hybrid_search(vector, question, K)

            one = Scope.parse(with_documents[0])

            def one_channel(question: str, vector: np.ndarray) -> None:
                store.list_documents(one.search_keys())
                engine.index_for(one).hybrid_search(vector, question, K)

            cold = timed(dm_question, queries[:1])
            timed(one_channel, queries[:5])  # warm-up: its index is cached, BM25 built
            dm_cpu: list[float] = []
            one_cpu: list[float] = []
            dm_times = timed(dm_question, queries, dm_cpu)
            one_times = timed(one_channel, queries, one_cpu)
            index = engine.index_for(dm, channels)
            union_chunks = len(index.chunks)
            phases = {
                "list_documents_ms": percentiles(timed(lambda q, v: store.list_documents(keys), queries)),
                "load_indexes_ms": percentiles(timed(lambda q, v: engine.index_for(dm, channels), queries)),
                "search_ms": percentiles(timed(lambda q, v: index.hybrid_search(v, q, K), queries)),
            }
            cache = store.cache
            dm_p, one_p = percentiles(dm_times), percentiles(one_times)
            results = {
                "bench": "dm_retrieval_latency",
                "dim": embedder.dim, "queries": args.queries, "k": K,
                "dm": {"channels": args.channels, "with_documents": len(with_documents),
                       "chunks_searched": union_chunks, "retrieval_ms": dm_p, "cpu_ms": percentiles(dm_cpu),
                       "phases": phases, "first_question_cold_ms": round(cold[0] * 1000, 1)},
                "one_channel": {"chunks_searched": args.chunks, "retrieval_ms": one_p, "cpu_ms": percentiles(one_cpu)},
                "ratio_dm_to_one_channel": {"p50": round(dm_p["p50"] / one_p["p50"], 1),
                                            "p99": round(dm_p["p99"] / one_p["p99"], 1)},
                "query_embedding_ms": percentiles(embed_times),
                "index_cache": {"indexes": len(cache), "bytes": cache.nbytes, "max_bytes": cache.max_bytes},
                "fill_s": round(fill_s, 1),
                "load_average_1m_at_end": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
                "blas_threads": "1 (phobos/runtime.py single_blas_thread, as in a worker)",
                "goal": "DM retrieval p99 < 100 ms",
                "meets_goal": dm_p["p99"] < 100,
            }
        finally:
            embedded.stop()
    text = json.dumps(results, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
