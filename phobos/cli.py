"""The `phobos` command: argument parsing and dispatch. The commands live in phobos/commands/, one module a group."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import redis

from bot.console import CONSOLE_SCOPE
from phobos import runtime
from phobos.commands.adapters import cmd_console, cmd_discord, cmd_slack, cmd_up
from phobos.commands.ask import cmd_ask
from phobos.commands.common import UsageError
from phobos.commands.deadletters import cmd_dlq
from phobos.commands.documents import cmd_ingest, cmd_reindex, cmd_search
from phobos.commands.feedback import cmd_feedback
from phobos.commands.status import cmd_models, cmd_redis, cmd_status
from phobos.commands.worker import cmd_worker
from phobos.redis_server import EmbeddedRedisError
from phobos.settings import Settings
from telemetry import logs

# Commands that run until stopped: they log at INFO by default and may serve PHOBOS_METRICS_PORT.
LONG_RUNNING = (cmd_up, cmd_worker, cmd_console, cmd_discord, cmd_slack)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings()
    telemetry = settings.telemetry
    default_level = "INFO" if args.func in LONG_RUNNING else "WARNING"
    logs.configure(telemetry.log_level or default_level, telemetry.log_format, telemetry.log_text)
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
