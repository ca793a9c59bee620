"""A worker's memory after questions over 1, 100 and 1,000 scopes of 50 pages each, before and after.

"before" is the code at ``--before-rev`` (default: main), checked out in a temporary git worktree:
every scope index ever asked kept, plus up to 64 merged thread+channel copies. "after" is this tree:
an LRU of scope indexes bounded by ``--cache-max-bytes``; a thread+channel question joins the parts.

One synthetic 50-page PDF is ingested once with the real embedder; its stored keys are then copied to
every scope (the same vectors and texts, stored once per scope as a real deployment would: each scope
is loaded, parsed and BM25-indexed on its own). Each scope gets a question at channel level and one in
a thread of that channel (threads are where Slack and Discord answers happen). Each (variant, scope
count) runs in a fresh process; RSS comes from /proc/self/status.

    python bench/worker_memory.py            # prints JSON
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_SCOPE = "bench:w:source"  # the ingested original; scopes c0, c1, ... are its copies
THREAD = "1700000000.000100"
IDENTITY_FIELDS = ("embedder", "dim")  # DocumentInfo fields the "before" code does not know


def rss_mb() -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM), in MiB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


def synthetic_pages(pages: int, seed: int = 7) -> list[str]:
    """Text pages with a word distribution like prose: 3,000 English words (whole words in the embedder's
    own vocabulary, so a page is as many tokens as real text), drawn by Zipf's law."""
    from phobos.runtime import embedder_location
    from phobos.settings import Settings

    with open(Path(embedder_location(Settings())) / "tokenizer.json") as f:
        words = sorted(w for w in json.load(f)["model"]["vocab"] if w.isalpha() and w.islower() and 4 <= len(w) <= 10)
    rng = random.Random(seed)
    vocabulary = rng.sample(words, 3000)
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    texts = []
    for number in range(1, pages + 1):
        sentences = []
        for _ in range(14):
            chosen = rng.choices(vocabulary, weights, k=rng.randint(10, 20))
            sentences.append(" ".join(chosen).capitalize() + ".")
        texts.append(f"Section {number}. " + " ".join(sentences))
    return texts


class MemoEmbedder:
    """The embedder with each distinct question embedded once: the bench asks the same 50 questions in
    every scope, and measures memory, not embedding time."""

    def __init__(self, embedder):  # type: ignore[no-untyped-def]
        self._embedder = embedder
        self.name, self.dim, self.max_tokens = embedder.name, embedder.dim, embedder.max_tokens
        self.count_tokens = embedder.count_tokens
        self._seen: dict[str, object] = {}

    def embed(self, texts: list[str]):  # type: ignore[no-untyped-def]
        import numpy as np

        missing = [t for t in texts if t not in self._seen]
        for text, vector in zip(missing, self._embedder.embed(missing), strict=True):
            self._seen[text] = vector
        return np.array([self._seen[t] for t in texts], dtype=np.float32).reshape(len(texts), self.dim)


def copy_scope(client, source: str, target: str, keep_identity: bool) -> None:  # type: ignore[no-untyped-def]
    """Store ``source``'s documents again under ``target``, as if each had been shared there."""
    from jobs import keys
    from workers.store import SCOPE_VERSION_PREFIX

    pipe = client.pipeline(transaction=False)
    for raw_id in client.smembers(keys.SCOPE_DOCS_PREFIX + source):
        doc = raw_id.decode()
        info = json.loads(client.get(f"{keys.DOC_PREFIX}{source}:{doc}"))
        info["scope_key"] = target
        if not keep_identity:
            for name in IDENTITY_FIELDS:
                info.pop(name, None)
        pipe.set(f"{keys.DOC_PREFIX}{target}:{doc}", json.dumps(info))
        pipe.set(f"{keys.DOC_CHUNKS_PREFIX}{target}:{doc}", client.get(f"{keys.DOC_CHUNKS_PREFIX}{source}:{doc}"))
        pipe.set(f"{keys.DOC_VECTORS_PREFIX}{target}:{doc}", client.get(f"{keys.DOC_VECTORS_PREFIX}{source}:{doc}"))
        pipe.sadd(keys.SCOPE_DOCS_PREFIX + target, doc)
        pipe.incr(SCOPE_VERSION_PREFIX + target)
    pipe.execute()


def prepare(url: str, pages: int) -> dict[str, object]:
    """Ingest the synthetic PDF once into SOURCE_SCOPE; returns what it holds."""
    import pymupdf

    from core.ingest import ingest_document
    from core.model_settings import ModelSettings
    from phobos.runtime import connect, load_embedder
    from phobos.settings import Settings
    from workers.store import RedisDocumentStore

    doc = pymupdf.open()
    for text in synthetic_pages(pages):
        doc.new_page().insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=10)
    data = doc.tobytes()
    settings = Settings(models=ModelSettings(lazy_embedder=False))
    embedder = load_embedder(settings)
    result = ingest_document(data, "synthetic.pdf", SOURCE_SCOPE, embedder, RedisDocumentStore(connect(url, settings)),
                        settings.ingest.limits())
    return {"pages": result.info.pages, "chunks_per_scope": result.info.chunks, "embedder": embedder.name}


def child(args: argparse.Namespace) -> None:
    """One worker's retrieval path over ``args.scopes`` scopes; prints its memory as JSON."""
    import redis

    from core.embedding import SentenceTransformerEmbedder
    from core.rag import RagEngine
    from core.scope import Scope
    from workers.store import RedisDocumentStore

    scopes = int(args.scopes)
    client = redis.Redis.from_url(args.redis)
    store = RedisDocumentStore(client, args.cache_max_bytes) if args.variant == "after" else RedisDocumentStore(client)
    engine = RagEngine(MemoEmbedder(SentenceTransformerEmbedder(args.embedder, bf16=False)), store)
    questions = [page.split(". ")[1][:80] for page in synthetic_pages(args.pages)]
    engine.context(questions[0], Scope("bench", "w", "warmup"))  # loads torch kernels, no index
    engine.embedder.embed(questions)
    baseline = rss_mb()
    started = time.monotonic()
    for n in range(scopes):
        channel = Scope("bench", "w", f"c{n}")
        thread = Scope("bench", "w", f"c{n}", THREAD)
        assert engine.context(questions[n % len(questions)], channel), "no passages found"
        assert engine.context(questions[(n + 1) % len(questions)], thread), "no passages found"
    after = rss_mb()
    result = {"variant": args.variant, "scopes": scopes, "questions": 2 * scopes,
              "rss_before_questions_mb": baseline["rss_mb"], **after,
              "rss_growth_mb": round(after["rss_mb"] - baseline["rss_mb"], 1),
              "seconds": round(time.monotonic() - started, 1)}
    cache = getattr(store, "cache", None)
    if cache is not None:
        result.update(cache_bytes=cache.nbytes, cache_max_bytes=cache.max_bytes, cached_scopes=len(cache))
    print(json.dumps(result), flush=True)


def run_child(tree: Path, variant: str, scopes: int, url: str, args: argparse.Namespace, embedder: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--variant", variant, "--scopes",
               str(scopes), "--redis", url, "--pages", str(args.pages), "--cache-max-bytes",
               str(args.cache_max_bytes), "--embedder", embedder]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{variant} with {scopes} scopes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scopes", default="1,100,1000", help="comma-separated scope counts")
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--cache-max-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--before-rev", default="main", help="the code to compare against")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--embedder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(ROOT))
    from phobos.redis_server import EmbeddedRedis
    from phobos.runtime import connect
    from phobos.settings import Settings

    counts = [int(n) for n in args.scopes.split(",")]
    with tempfile.TemporaryDirectory(prefix="phobos-memory-") as temp:
        before_tree = Path(temp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before_tree), args.before_rev],
                       check=True, capture_output=True)
        embedded = EmbeddedRedis(Path(temp) / "redis")
        embedded.ensure_running()
        try:
            client = connect(embedded.url)
            setup = prepare(embedded.url, args.pages)
            embedder = Settings().models.embedder
            rows = []
            for count in counts:
                row: dict[str, object] = {"scopes": count}
                for variant, tree in (("before", before_tree), ("after", ROOT)):
                    for n in range(count):
                        copy_scope(client, SOURCE_SCOPE, f"bench:w:c{n}", keep_identity=variant == "after")
                    row[variant] = run_child(tree, variant, count, embedded.url, args, embedder)
                before, after = row["before"], row["after"]
                row["rss_ratio_before_over_after"] = round(before["rss_mb"] / after["rss_mb"], 2)  # type: ignore[index]
                rows.append(row)
        finally:
            embedded.stop()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_tree)],
                           capture_output=True)
    print(json.dumps({"bench": "worker_memory", "before_rev": args.before_rev, "cache_max_bytes": args.cache_max_bytes,
                      **setup, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
