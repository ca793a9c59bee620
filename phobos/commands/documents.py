"""`phobos ingest`, `search` and `reindex`: the documents of a scope, worked on in this process."""

from __future__ import annotations

import argparse
import sys

from phobos import runtime
from phobos.commands.common import parse_scope
from phobos.settings import Settings


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from workers.local_ingest import ingest_files
    from workers.store import RedisDocumentStore

    scope = parse_scope(args.scope)
    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        failures = ingest_files(store, scope.key, args.files, settings.ingest.limits(),
                                lambda: runtime.load_embedder(settings))
    return 1 if failures else 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from workers.local_search import search_questions
    from workers.store import RedisDocumentStore

    scope = parse_scope(args.scope)
    # Bytes from stdin, not text: a line of invalid UTF-8 is normalised like any question, not a decode error.
    questions = [args.question] if args.question is not None else (
        line for line in sys.stdin.buffer if line.strip())
    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        embedder = runtime.load_embedder(settings)
        engine = runtime.engine(settings, embedder, store)
        return search_questions(engine, questions, scope, k=args.k, as_json=args.json)


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    from workers.reindex import reindex_scope
    from workers.store import RedisDocumentStore

    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        scopes = store.scope_keys() if args.all else [parse_scope(args.scope).key]
        embedder = runtime.load_embedder(settings)
        done = sum(reindex_scope(store, scope, embedder, report=print) for scope in scopes)
    print(f"Re-embedded {done} document(s) in {len(scopes)} scope(s) with {embedder.name} "
          f"({embedder.dim} dimensions).")
    return 0
