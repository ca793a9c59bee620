"""`phobos ask`: one question through the queue, the answer streamed to the terminal (or as one JSON line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

from bot.render import format_sources
from core.scope import Scope
from core.text_safety import EMPTY_QUESTION_HINT, normalise_question
from jobs.client import JobClient, run_job
from jobs.heartbeats import live_workers
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from phobos import runtime
from phobos.commands.common import UsageError, parse_scope
from phobos.settings import Settings
from telemetry import metrics


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    scope = parse_scope(args.scope)
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
    jobs = JobClient(client, adapter_id=f"cli-{uuid.uuid4().hex[:8]}", limits=settings.queue.admission_limits(),
                     job_deadline_s=settings.queue.job_deadline_s, on_submitted=metrics.job_submitted)
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
