"""The `phobos` command: up, worker, ingest, search, ask, models, status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

from bot.console import CONSOLE_SCOPE, ConsoleAdapter
from bot.render import format_sources
from core.documents import Citation
from core.scope import Scope
from jobs.client import JobClient, run_job
from jobs.interactions import AsyncRatings
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from phobos import runtime
from phobos.adapters import configured_adapters
from phobos.settings import Settings
from telemetry import logs
from workers.heartbeat import live_models, live_workers

log = logging.getLogger("phobos")
WORKER_READY_TIMEOUT_S = 300.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings()
    default_level = "INFO" if args.func in LONG_RUNNING else "WARNING"
    logs.configure(settings.log_level or default_level, settings.log_format, settings.log_text)
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phobos", description="Ask questions about the PDFs shared in a chat.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

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
                              memory_ttl_s=settings.memory_ttl_s, log_text=settings.log_text,
                              interaction_retention_days=settings.interaction_retention_days,
                              interaction_max_entries=settings.interaction_max_entries,
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
    started = time.monotonic()
    # SIGTERM must unwind like Ctrl-C, so the worker and the embedded Redis are stopped below.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # With the console, every process logs to files: log lines in the middle of a conversation are noise.
    log_dir = None if args.no_console else settings.state_path / "logs"
    if log_dir is not None:
        logs.configure(settings.log_level or "INFO", settings.log_format, settings.log_text,
                       path=log_dir / "phobos.log")
    with runtime.redis_url(settings) as url:
        health = runtime.serve_metrics(settings, url)
        worker = _start_child("worker", url, settings, 1, log_dir)
        children = [worker]
        try:
            client = runtime.connect(url, settings)
            if not _wait_for_worker(client, worker, started, log_dir):
                return 1
            for offset, platform in enumerate(configured_adapters(settings), start=2):
                print(f"Starting the {platform} adapter.", file=sys.stderr, flush=True)
                children.append(_start_child(platform, url, settings, offset, log_dir))
            if health:
                health.mark_loaded()
            where = runtime.masked_url(url) if settings.redis_url else "embedded"
            print(f"Phobos is ready in {time.monotonic() - started:.1f} s (Redis: {where}).", file=sys.stderr,
                  flush=True)
            if log_dir is not None:
                print(f"Logs: {log_dir}", file=sys.stderr, flush=True)
            if args.no_console:
                worker.wait()
                return worker.returncode
            asyncio.run(_console(url, settings))
            return 0
        finally:
            for child in reversed(children):
                _stop_child(child)


def _start_child(command: str, url: str, settings: Settings, port_offset: int,
                 log_dir: Path | None) -> subprocess.Popen[bytes]:
    """`phobos COMMAND` as a child: the same Redis, the next metrics port, its output to log_dir when given."""
    port = settings.metrics_port + port_offset if settings.metrics_port else 0
    env = {**os.environ, "REDIS_URL": url, "PHOBOS_METRICS_PORT": str(port)}
    output = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        output = (log_dir / f"{command}.log").open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "phobos", command], env=env, stdout=output,
                                stderr=subprocess.STDOUT if output else None, preexec_fn=_die_with_parent)
    finally:
        if output is not None:
            output.close()  # the child holds its own copy


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when `phobos up` dies, even by SIGKILL, so no worker is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_worker(client: redis.Redis, worker: subprocess.Popen[bytes], started: float,
                     log_dir: Path | None) -> bool:
    print("Starting a worker and loading models...", file=sys.stderr, flush=True)
    while time.monotonic() - started < WORKER_READY_TIMEOUT_S:
        if worker.poll() is not None:
            where = "see the log above"
            if log_dir is not None:
                log_file = log_dir / "worker.log"
                where = f"the end of {log_file}:\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
            print(f"The worker exited during start-up (code {worker.returncode}); {where}", file=sys.stderr)
            return False
        if any(w.pid == worker.pid for w in live_workers(client)):
            return True
        time.sleep(0.2)
    print("The worker did not become ready in time.", file=sys.stderr)
    return False


async def _console(url: str, settings: Settings) -> None:
    client = runtime.connect_async(url, settings)
    try:
        jobs = JobClient(client, adapter_id=f"console-{uuid.uuid4().hex[:8]}",
                         limits=runtime.admission_limits(settings), job_deadline_s=settings.job_deadline_s)
        ratings = AsyncRatings(client, retention_days=settings.interaction_retention_days,
                               max_entries=settings.interaction_max_entries)
        await ConsoleAdapter(jobs, user=os.environ.get("USER", "console-user"),
                             answer_timeout_s=settings.answer_timeout_s, ratings=ratings).run()
        await client.delete(jobs.reply_stream)
    finally:
        await client.aclose()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from core.ingest import IngestResult, document_id, ingest_document
    from core.pdf import DocumentError
    from workers.store import RedisDocumentStore

    scope = Scope.parse(args.scope)
    failures = 0
    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        embedder = None
        for path in args.files:
            data = path.read_bytes()
            known = store.get_document(scope.key, document_id(data))
            if known is not None:  # skip loading the embedder when there is nothing to embed
                print(IngestResult(known, already_indexed=True).summary())
                continue
            if embedder is None:
                print("Loading the embedding model...", file=sys.stderr, flush=True)
                embedder = runtime.load_embedder(settings)
            try:
                result = ingest_document(data, path.name, scope.key, embedder, store, runtime.ingest_limits(settings),
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

    scope = Scope.parse(args.scope)
    questions = [args.question] if args.question else (line.strip() for line in sys.stdin)
    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        embedder = runtime.load_embedder(settings)
        engine = RagEngine(embedder, store, top_k=settings.top_k, reranker=make_reranker(settings.reranker, embedder))
        for question in questions:
            if not question:
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
    return 0


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    from workers.reindex import reindex_scope
    from workers.store import RedisDocumentStore

    with runtime.redis_url(settings) as url:
        store = RedisDocumentStore(runtime.connect(url, settings))
        scopes = store.scope_keys() if args.all else [Scope.parse(args.scope).key]
        embedder = runtime.load_embedder(settings)
        done = sum(reindex_scope(store, scope, embedder, report=print) for scope in scopes)
    print(f"Re-embedded {done} document(s) in {len(scopes)} scope(s) with {embedder.name} "
          f"({embedder.dim} dimensions).")
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    scope = Scope.parse(args.scope)
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
        final = await run_job(jobs, job, on_event=show, timeout_s=settings.answer_timeout_s)
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
    with runtime.redis_url(settings) as url:
        live = live_models(runtime.connect(url, settings))
    for spec in registry.specs():
        mark = "*" if spec.name in live else " "
        default = " (default)" if spec.name == settings.default_model else ""
        print(f"{mark} {spec.name:<22} {spec.backend:<12} {spec.description}{default}")
    print("* = served by a live worker now")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import keys

    with runtime.redis_url(settings) as url:
        client = runtime.connect(url, settings)
        workers = live_workers(client)
        depth = client.xlen(keys.JOBS_STREAM) if client.exists(keys.JOBS_STREAM) else 0
    print(f"Redis: {runtime.masked_url(url)}")
    print(f"Workers live: {len(workers)}")
    for w in workers:
        print(f"  {w.worker_id} on {w.host} (pid {w.pid}): {', '.join(w.models)}")
    print(f"Jobs in stream: {depth}")
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
