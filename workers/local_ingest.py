"""`phobos ingest`: index local files into a scope in this process, without the queue or a worker.

The embedder is loaded only when a file is new to the scope: re-sharing indexed files is instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from core.embedding import Embedder
from core.ingest import IngestLimits, IngestResult, document_id, ingest_document
from core.local_files import read_local_file
from core.pdf import DocumentError
from workers.store import RedisDocumentStore


def ingest_files(store: RedisDocumentStore, scope_key: str, paths: Iterable[Path], limits: IngestLimits,
                 load_embedder: Callable[[], Embedder], *, out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> int:
    """Index each of ``paths`` into ``scope_key``; a summary line per file on ``out``, errors and progress on
    ``err``. Returns how many files failed."""

    def progress(done: int, total: int, what: str) -> None:
        print(f"  {what}: {done}/{total} pages", file=err, flush=True)

    failures = 0
    embedder: Embedder | None = None
    for path in paths:
        try:
            data = read_local_file(path, limits.max_bytes)
        except DocumentError as exc:
            print(f"error: {exc}", file=err)
            failures += 1
            continue
        known = store.get_document(scope_key, document_id(data))
        if known is not None:  # skip loading the embedder when there is nothing to embed
            print(IngestResult(known, already_indexed=True).summary(), file=out)
            continue
        if embedder is None:
            print("Loading the embedding model...", file=err, flush=True)
            embedder = load_embedder()
        try:
            result = ingest_document(data, path.name, scope_key, embedder, store, limits, user="cli",
                                     progress=progress)
        except DocumentError as exc:
            print(f"error: {exc}", file=err)
            failures += 1
            continue
        print(result.summary(), file=out)
    return failures
