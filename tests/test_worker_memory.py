"""A worker asked about 1,000 scopes keeps its scope indexes within PHOBOS_INDEX_CACHE_MAX_BYTES."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import redis

from core.ingest import IngestLimits, ingest_pdf
from core.package_files import resolve
from jobs import keys
from phobos.settings import Settings
from tests.conftest import ROOT, phobos_env
from tests.pdfs import pdf_with_pages
from workers.store import SCOPE_VERSION_PREFIX, RedisDocumentStore

SCOPES = 1000
WARM_UP_SCOPES = 50
CACHE_MAX_BYTES = 4 * 1024 * 1024
SOURCE = "test:w:source"
ANSWER_DEADLINE_S = 500  # generous: 2,000 questions on a busy 2-core machine


def prose_pages(pages: int, seed: int = 3) -> list[str]:
    """Pages of English words (from the embedder's vocabulary) drawn by Zipf's law, like prose."""
    with open(Path(resolve(Settings().embedder)) / "tokenizer.json") as f:
        words = sorted(w for w in json.load(f)["model"]["vocab"] if w.isalpha() and w.islower() and len(w) >= 4)
    rng = random.Random(seed)
    vocabulary = rng.sample(words, 3000)
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    return [f"Section {n}. " + " ".join(rng.choices(vocabulary, weights, k=220)) + "." for n in range(pages)]


def copy_scope(client: redis.Redis, source: str, target: str) -> None:
    """The source scope's documents stored again under ``target``, as if shared there too."""
    pipe = client.pipeline(transaction=False)
    for raw in client.smembers(keys.SCOPE_DOCS_PREFIX + source):  # type: ignore[union-attr]
        doc = raw.decode()
        info = json.loads(client.get(f"{keys.DOC_PREFIX}{source}:{doc}"))  # type: ignore[arg-type]
        info["scope_key"] = target
        pipe.set(f"{keys.DOC_PREFIX}{target}:{doc}", json.dumps(info))
        for prefix in (keys.DOC_CHUNKS_PREFIX, keys.DOC_VECTORS_PREFIX):
            pipe.set(f"{prefix}{target}:{doc}", client.get(f"{prefix}{source}:{doc}"))  # type: ignore[arg-type]
        pipe.sadd(keys.SCOPE_DOCS_PREFIX + target, doc)
        pipe.incr(SCOPE_VERSION_PREFIX + target)
    pipe.execute()


# The worker's retrieval path (store, cache, engine) in a process of its own, so its RSS is its own.
# Every scope gets the same question, embedded once: the test measures memory, not the embedder.
WORKER = """
import json, sys
import numpy as np
import redis
from core.rag import RagEngine
from core.scope import Scope
from phobos.runtime import load_embedder
from phobos.settings import Settings
from workers.store import RedisDocumentStore

url, scopes, warm_up, max_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def rss_bytes():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

class OnceEmbedder:
    def __init__(self, inner):
        self.inner, self.name, self.dim, self.max_tokens = inner, inner.name, inner.dim, inner.max_tokens
        self.count_tokens, self.seen = inner.count_tokens, {}
    def embed(self, texts):
        for text in texts:
            if text not in self.seen:
                self.seen[text] = self.inner.embed([text])[0]
        return np.array([self.seen[t] for t in texts], dtype=np.float32)

store = RedisDocumentStore(redis.Redis.from_url(url), max_bytes)
engine = RagEngine(OnceEmbedder(load_embedder(Settings())), store)
question = "Which section talks about the harbour?"
most_cached, answered = 0, 0
for n in range(scopes):
    if n == warm_up:
        warm_rss = rss_bytes()
    for scope in (Scope("test", "w", f"c{n}"), Scope("test", "w", f"c{n}", "thread-1")):
        answered += bool(engine.context(question, scope))
        most_cached = max(most_cached, store.cache.nbytes)
print(json.dumps({"warm_rss": warm_rss, "rss": rss_bytes(), "most_cached": most_cached, "answered": answered,
                  "cached_scopes": len(store.cache)}))
"""


def test_a_thousand_scopes_stay_within_the_cache_bound(redis_server, redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    limits = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=250, overlap_tokens=30)
    ingest_pdf(pdf_with_pages(prose_pages(10)), "prose.pdf", SOURCE, embedder, store, limits)
    one_scope = store.load_index(SOURCE, embedder.dim, embedder.name)
    one_scope.lexical()
    unbounded_bytes = SCOPES * one_scope.nbytes()  # what keeping every scope would hold
    assert unbounded_bytes > 40 * CACHE_MAX_BYTES
    for n in range(SCOPES):
        copy_scope(redis_client, SOURCE, f"test:w:c{n}")

    worker = subprocess.run([sys.executable, "-c", WORKER, redis_server.url, str(SCOPES), str(WARM_UP_SCOPES),
                             str(CACHE_MAX_BYTES)], env=phobos_env(redis_server.url), cwd=ROOT,
                            capture_output=True, text=True, timeout=ANSWER_DEADLINE_S)
    assert worker.returncode == 0, worker.stderr[-3000:]
    measured = json.loads(worker.stdout.strip().splitlines()[-1])
    assert measured["answered"] == 2 * SCOPES  # every channel and thread question found its passages
    assert 0 < measured["most_cached"] <= CACHE_MAX_BYTES and 0 < measured["cached_scopes"] < SCOPES
    # Unbounded, the process would grow by about unbounded_bytes; bounded, it stays near where it was.
    grown = measured["rss"] - measured["warm_rss"]
    assert grown < unbounded_bytes / 4, (grown, unbounded_bytes)
