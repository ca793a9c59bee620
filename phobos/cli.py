"""The `phobos` command: up, worker, ingest, search, ask, models, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import redis

from bot.console import CONSOLE_SCOPE, ConsoleAdapter
from bot.render import format_sources
from core.documents import Citation
from core.scope import Scope
from core.text_safety import EMPTY_QUESTION_HINT, normalise_question
from jobs.client import JobClient, run_job
from jobs.interactions import AsyncRatings
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from phobos import runtime
from phobos.redis_server import EmbeddedRedis, EmbeddedRedisError, describe_uptime
from phobos.settings import Settings
from telemetry import logs
from workers.heartbeat import live_models, live_workers

log = logging.getLogger("phobos")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings()
    default_level = "INFO" if args.func in LONG_RUNNING else "WARNING"
    logs.configure(settings.telemetry.log_level or default_level, settings.telemetry.log_format,
                   settings.telemetry.log_text)
    try:
        return int(args.func(args, settings) or 0)
    except UsageError as exc:
        print(f"phobos {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # one sentence, not a traceback
        print(runtime.unreachable(settings, exc), file=sys.stderr)
        return 1
    except EmbeddedRedisError as exc:
        print(exc, file=sys.stderr)
        return 1


class UsageError(Exception):
    """What a command was given cannot be used: shown as one sentence, exit status 2, no traceback."""


def _scope(key: str) -> Scope:
    try:
        return Scope.parse(key)
    except ValueError as exc:
        raise UsageError(f"{exc}.") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phobos", description="Ask questions about the PDFs shared in a chat.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")

    up = sub.add_parser("up", help="start Redis (if embedded), a worker and the console adapter")
    up.add_argument("--no-console", action="store_true", help="run without the console adapter")
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument("--models", help="comma-separated models to serve (default: PHOBOS_WORKER_MODELS)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty (tests)")
    worker.set_defaults(func=cmd_worker)

    console_cmd = sub.add_parser("console", help="run the console adapter alone (needs a worker on REDIS_URL)")
    console_cmd.set_defaults(func=cmd_console)

    discord_cmd = sub.add_parser("discord", help="run the Discord adapter (needs DISCORD_TOKEN)")
    discord_cmd.set_defaults(func=cmd_discord)

    slack_cmd = sub.add_parser("slack", help="run the Slack adapter (needs SLACK_BOT_TOKEN; docs/slack.md)")
    slack_cmd.set_defaults(func=cmd_slack)

    ingest = sub.add_parser("ingest", help="index PDF files into a scope")
    ingest.add_argument("files", nargs="+", type=Path)
    ingest.add_argument("--scope", default=CONSOLE_SCOPE.key, help="platform:workspace:channel[:thread]")
    ingest.set_defaults(func=cmd_ingest)

    search = sub.add_parser("search", help="show the passages a question retrieves")
    search.add_argument("question", nargs="?", help="omit to read one question per line from stdin")
    search.add_argument("--scope", default=CONSOLE_SCOPE.key)
    search.add_argument("--k", type=int, default=None, help="hits per question (default: PHOBOS_TOP_K)")
    search.add_argument("--json", action="store_true", help="one JSON line per question")
    search.set_defaults(func=cmd_search)

    ask = sub.add_parser("ask", help="ask a question through the queue and wait for the answer")
    ask.add_argument("question")
    ask.add_argument("--scope", default=CONSOLE_SCOPE.key)
    ask.add_argument("--model", default=None)
    ask.add_argument("--json", action="store_true")
    ask.set_defaults(func=cmd_ask)

    models = sub.add_parser("models", help="list the model registry and which models are live")
    models.set_defaults(func=cmd_models)

    status = sub.add_parser("status", help="Redis, workers, queue depth")
    status.set_defaults(func=cmd_status)

    redis_cmd = sub.add_parser("redis", help="the embedded Redis (REDIS_URL unset): stop it")
    redis_cmd.add_argument("action", choices=["stop"], help="stop: fsync its data and stop it (the next "
                                                            "Phobos command starts it again)")
    redis_cmd.set_defaults(func=cmd_redis)

    reindex = sub.add_parser("reindex", help="re-embed stored documents with the configured embedder")
    which = reindex.add_mutually_exclusive_group(required=True)
    which.add_argument("--scope", help="one scope, e.g. slack:T1:C1 (a thread has its own)")
    which.add_argument("--all", action="store_true", help="every scope holding documents")
    reindex.set_defaults(func=cmd_reindex)

    dlq = sub.add_parser("dlq", help="jobs that failed too often: list, retry or drop them")
    dlq.add_argument("action", choices=["list", "retry", "drop"])
    dlq.add_argument("ids", nargs="*", help="dead-letter entry ids (retry, drop); 'all' for every one")
    dlq.set_defaults(func=cmd_dlq)

    feedback = sub.add_parser("feedback", help="rated answers: export them as eval questions, or rating shares")
    feedback.add_argument("action", choices=["export", "stats"],
                          help="export: rated questions as JSONL (bench question format); stats: good share "
                               "per model and week")
    feedback.add_argument("--output", "-o", help="export: write here instead of stdout")
    feedback.add_argument("--rating", choices=["good", "bad", "all"], default="all",
                          help="export: only answers rated this way (default all)")
    feedback.set_defaults(func=cmd_feedback)
    return parser


# --- commands ---

def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import Worker, WorkerConfig

    requested = [n.strip() for n in args.models.split(",")] if args.models else settings.served_models()
    with runtime.redis_url(settings) as url:
        health = runtime.serve_metrics(settings, url)  # /readyz answers 503 while the models load
        client = runtime.connect(url, settings)
        registry = runtime.load_registry(settings)
        embedder = runtime.load_embedder(settings)
        names, default_model = runtime.resolve_auto(settings, registry, requested)
        generators = runtime.load_generators(settings, registry, names)
        config = WorkerConfig(default_model=default_model,
                              ingest_limits=runtime.ingest_limits(settings), heartbeat_ttl_s=settings.heartbeat_ttl_s,
                              worker_id=settings.worker_id,
                              reclaim_idle_s=settings.reclaim_idle_s, max_deliveries=settings.max_deliveries,
                              generation_timeout_s=settings.generation_timeout_s,
                              shutdown_grace_s=settings.shutdown_grace_s, concurrency=settings.worker_concurrency,
                              memory_turns=settings.memory_turns, memory_tokens=settings.memory_tokens,
                              memory_ttl_s=settings.memory_ttl_s, log_text=settings.telemetry.log_text,
                              interaction_retention_days=settings.adapters.interaction_retention_days,
                              interaction_max_entries=settings.adapters.interaction_max_entries,
                              index_cache_max_bytes=settings.index_cache_max_bytes, links=settings.links,
                              fetch_limits=runtime.fetch_limits(settings), fetch_max_links=settings.fetch_max_links,
                              claims=settings.claims)
        worker = Worker(client, embedder, generators, registry, config, top_k=settings.top_k,
                        min_relevance=runtime.relevance_floor(settings), reranker=settings.reranker)
        worker.install_signal_handlers()
        if health:
            health.mark_loaded()
        worker.run(burst=args.burst)
    return 0


def cmd_discord(args: argparse.Namespace, settings: Settings) -> int:
    from phobos.adapters import run_discord

    with runtime.redis_url(settings) as url:
        _serve_adapter_metrics(settings, url)
        run_discord(settings, url)
    return 0


def cmd_slack(args: argparse.Namespace, settings: Settings) -> int:
    from phobos.adapters import run_slack

    with runtime.redis_url(settings) as url:
        _serve_adapter_metrics(settings, url)
        run_slack(settings, url)
    return 0


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    with runtime.redis_url(settings) as url:
        _serve_adapter_metrics(settings, url)
        asyncio.run(_console(url, settings))
    return 0


def _serve_adapter_metrics(settings: Settings, url: str) -> None:
    health = runtime.serve_metrics(settings, url)
    if health:
        health.mark_loaded()  # an adapter loads no models: ready whenever Redis answers


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from phobos.supervisor import run_up

    return run_up(settings, with_console=not args.no_console, console=_console)


async def _console(url: str, settings: Settings) -> None:
    client = runtime.connect_async(url, settings)
    try:
        await client.ping()  # an unreachable Redis is said at once, not after the first question
        jobs = JobClient(client, adapter_id=f"console-{uuid.uuid4().hex[:8]}",
                         limits=runtime.admission_limits(settings), job_deadline_s=settings.job_deadline_s)
        ratings = AsyncRatings(client, retention_days=settings.adapters.interaction_retention_days,
                               max_entries=settings.adapters.interaction_max_entries)
        await ConsoleAdapter(jobs, user=os.environ.get("USER", "console-user"),
                             reply_timeout_s=settings.adapters.reply_timeout_s, ratings=ratings,
                             max_upload_bytes=int(settings.max_upload_mb * 1_000_000)).run()
        await client.delete(jobs.reply_stream)
    finally:
        await client.aclose()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from core.ingest import IngestResult, document_id, ingest_document
    from core.local_files import read_local_file
    from core.pdf import DocumentError
    from workers.store import RedisDocumentStore

    scope = _scope(args.scope)
    limits = runtime.ingest_limits(settings)
    failures = 0
    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        embedder = None
        for path in args.files:
            try:
                data = read_local_file(path, limits.max_bytes)
            except DocumentError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failures += 1
                continue
            known = store.get_document(scope.key, document_id(data))
            if known is not None:  # skip loading the embedder when there is nothing to embed
                print(IngestResult(known, already_indexed=True).summary())
                continue
            if embedder is None:
                print("Loading the embedding model...", file=sys.stderr, flush=True)
                embedder = runtime.load_embedder(settings)
            try:
                result = ingest_document(data, path.name, scope.key, embedder, store, limits,
                                    user="cli", progress=_print_progress)
            except DocumentError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failures += 1
                continue
            print(result.summary())
    return 1 if failures else 0


def _print_progress(done: int, total: int, what: str) -> None:
    print(f"  {what}: {done}/{total} pages", file=sys.stderr, flush=True)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from core.index import EmbedderMismatchError
    from core.rag import RagEngine
    from core.rerank import make_reranker
    from workers.store import RedisDocumentStore

    scope = _scope(args.scope)
    # Bytes from stdin, not text: a line of invalid UTF-8 is normalised like any question, not a decode error.
    questions = [args.question] if args.question is not None else (
        line for line in sys.stdin.buffer if line.strip())
    failures = 0
    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        embedder = runtime.load_embedder(settings)
        engine = RagEngine(embedder, store, top_k=settings.top_k, reranker=make_reranker(settings.reranker, embedder))
        for asked in questions:
            question = normalise_question(asked)
            if not question:
                print(f"error: {EMPTY_QUESTION_HINT}", file=sys.stderr)
                failures += 1
                continue
            try:
                hits = engine.retrieve(question, scope, k=args.k)
            except EmbedderMismatchError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps({"question": question, "hits": [
                    {"file": h.chunk.file_name, "pages": list(h.chunk.pages), "score": round(h.score, 4),
                     "text": h.chunk.text} for h in hits]}), flush=True)
                continue
            print(f"Q: {question}")
            if not hits:
                print("  (no documents in this scope)")
            for rank, hit in enumerate(hits, 1):
                where = Citation.of(hit.chunk).label()
                print(f"  {rank}. {where}  score={hit.score:.3f}  {hit.chunk.text[:160]}")
    return 1 if failures else 0


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    from workers.reindex import reindex_scope
    from workers.store import RedisDocumentStore

    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        scopes = store.scope_keys() if args.all else [_scope(args.scope).key]
        embedder = runtime.load_embedder(settings)
        done = sum(reindex_scope(store, scope, embedder, report=print) for scope in scopes)
    print(f"Re-embedded {done} document(s) in {len(scopes)} scope(s) with {embedder.name} "
          f"({embedder.dim} dimensions).")
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    scope = _scope(args.scope)
    args.question = normalise_question(args.question)
    if not args.question:
        raise UsageError(EMPTY_QUESTION_HINT)
    with runtime.redis_url(settings) as url:
        if not live_workers(runtime.connect(url, settings)):
            print("No worker is running, so nobody can answer. Start one with `phobos worker` "
                  "(or `phobos up`).", file=sys.stderr)
            return 2
        return asyncio.run(_ask(url, scope, args, settings))


async def _ask(url: str, scope: Scope, args: argparse.Namespace, settings: Settings) -> int:
    client = runtime.connect_async(url, settings)
    jobs = JobClient(client, adapter_id=f"cli-{uuid.uuid4().hex[:8]}", limits=runtime.admission_limits(settings),
                     job_deadline_s=settings.job_deadline_s)
    job = Job(id=f"cli:{uuid.uuid4().hex}", kind=JobKind.ASK, scope=scope, user="cli",
              reply_to=jobs.reply_stream, text=args.question, model=args.model)
    first_token_at: list[float] = []
    started = time.monotonic()

    def show(event: ReplyEvent) -> None:
        if event.type is ReplyType.DELTA:
            if not first_token_at:
                first_token_at.append(time.monotonic() - started)
            if not args.json:
                print(event.text, end="", flush=True)

    try:
        final = await run_job(jobs, job, on_event=show, timeout_s=settings.cli.ask_timeout_s)
    finally:
        await client.delete(jobs.reply_stream)
        await client.aclose()
    if args.json:
        print(json.dumps({"type": final.type.value, "text": final.text,
                          "citations": [{"file": c.file_name, "pages": list(c.pages)} for c in final.citations],
                          "first_token_s": first_token_at[0] if first_token_at else None,
                          "total_s": time.monotonic() - started}))
    else:
        if final.type is ReplyType.ERROR:
            print(f"[!] {final.text}", file=sys.stderr)
        else:
            print("" if first_token_at else final.text)
            sources = format_sources(final.citations)
            if sources:
                print(sources)
    return 0 if final.type is ReplyType.FINAL else 1


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    registry = runtime.load_registry(settings)
    url = runtime.running_redis_url(settings)  # a listing does not start the embedded Redis
    live = live_models(runtime.connect(url, settings)) if url else set()
    for spec in registry.specs():
        mark = "*" if spec.name in live else " "
        default = " (default)" if spec.name == settings.default_model else ""
        print(f"{mark} {spec.name:<22} {spec.backend:<12} {spec.description}{default}")
    print("* = served by a live worker now")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import keys, supervised

    url = runtime.running_redis_url(settings)  # a look does not start the embedded Redis
    if url is None:
        print(f"Redis: embedded, not running (data in {EmbeddedRedis(settings.state_path).data_dir}; "
              "the next `phobos up`, `worker` or `ingest` starts it)")
        print("Workers live: 0")
        return 0
    client = runtime.connect(url, settings)
    workers = live_workers(client)
    depth = client.xlen(keys.JOBS_STREAM) if client.exists(keys.JOBS_STREAM) else 0
    children = supervised.current(client)
    print(f"Redis: {_redis_line(settings, url)}")
    print(f"Workers live: {len(workers)}")
    for w in workers:
        print(f"  {w.worker_id} on {w.host} (pid {w.pid}): {', '.join(w.models)}")
    print(f"Jobs in stream: {depth}")
    if children:
        print("Run by `phobos up`:")
        for child in children:
            print(f"  {child.describe()}")
    return 0


def _redis_line(settings: Settings, url: str) -> str:
    if not runtime.is_embedded(settings):
        return runtime.masked_url(url)
    info = EmbeddedRedis(settings.state_path).info()
    if info is None:  # stopped between the two looks
        return f"embedded, not running ({url})"
    return f"embedded, pid {info.pid}, up {describe_uptime(info.uptime_s)} ({url})"


def cmd_redis(args: argparse.Namespace, settings: Settings) -> int:
    if not runtime.is_embedded(settings):
        print("REDIS_URL is set, so there is no embedded Redis to stop; stop that server where it runs.",
              file=sys.stderr)
        return 2
    embedded = EmbeddedRedis(settings.state_path)
    stopped = embedded.stop()
    if stopped is None:
        print(f"The embedded Redis is not running (data in {embedded.data_dir}).")
        return 0
    others = stopped.clients - 1  # less the connection that asked
    print(f"Stopped the embedded Redis (pid {stopped.pid}, up {describe_uptime(stopped.uptime_s)}); "
          f"its data stays in {embedded.data_dir}.")
    if others > 0:
        print(f"{others} connection(s) were still open: those processes wait for Redis until the next Phobos "
              "command starts it.")
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from workers import deadletter

    with runtime.redis_url(settings) as url:
        client = runtime.connect(url, settings)
        dead = deadletter.list_dead(client, count=10_000)
        if args.action == "list":
            for entry in dead:
                job = entry.job()
                what = f"{job.id} {job.kind} by {job.user}: {job.text[:60]!r}" if job else entry.job_json[:80]
                print(f"{entry.dead_id}  {entry.deliveries} deliveries  {entry.reason}  {what}")
            print(f"{len(dead)} dead-lettered job(s)")
            return 0
        if not args.ids:
            print(f"Name the entries to {args.action} (ids from `phobos dlq list`), or 'all'.", file=sys.stderr)
            return 2
        ids = [entry.dead_id for entry in dead] if args.ids == ["all"] else args.ids
        failures = 0
        for dead_id in ids:
            if args.action == "retry":
                new_id = deadletter.retry(client, dead_id)
                print(f"{dead_id}: queued again as {new_id}" if new_id else f"{dead_id}: not found")
                failures += new_id is None
            else:
                is_dropped = deadletter.drop(client, dead_id)
                print(f"{dead_id}: dropped" if is_dropped else f"{dead_id}: not found")
                failures += not is_dropped
    return 1 if failures else 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.interactions import InteractionLog, export_rated, rating_stats

    with runtime.redis_url(settings) as url:
        rated = InteractionLog(runtime.connect(url, settings)).rated_answers()
    if args.action == "stats":
        rows = rating_stats(rated)
        print(f"{'week':<10} {'model':<24} {'good':>5} {'bad':>5} {'good share':>10}")
        for row in rows:
            print(f"{row['week']:<10} {row['model']:<24} {row['good']:>5} {row['bad']:>5} {row['good_share']:>10.0%}")
        if not rows:
            print("No rated answers yet.")
        return 0
    if args.rating != "all":
        rated = [item for item in rated if item.rating == args.rating]
    lines, without_text = export_rated(rated)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    print(f"{len(lines)} rated question(s) exported.", file=sys.stderr)
    if without_text:
        print(f"{without_text} rated answer(s) left out: their question text was not kept "
              "(set PHOBOS_LOG_TEXT=true to keep it).", file=sys.stderr)
    return 0


# Commands that run until stopped: they log at INFO by default and may serve PHOBOS_METRICS_PORT.
LONG_RUNNING = (cmd_up, cmd_worker, cmd_console, cmd_discord, cmd_slack)
