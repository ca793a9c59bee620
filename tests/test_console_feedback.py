"""Console /good and /bad: the last answer in the conversation is rated in the interaction log."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time

import redis.asyncio as aioredis

from bot.console import HELP, ConsoleAdapter
from core.scope import Scope
from jobs import keys
from jobs.client import JobClient
from jobs.interactions import InteractionLog
from tests.conftest import ROOT, phobos_env
from tests.pdfs import FACT_PAGES, pdf_with_pages


def test_help_lists_good_and_bad() -> None:
    assert "/good" in HELP and "/bad [WHY]" in HELP


def test_bad_rates_the_last_console_answer_and_is_exported(redis_server, redis_client, start_worker,
                                                            tmp_path) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_LOG_TEXT="true")
    pdf = tmp_path / "facts.pdf"
    pdf.write_bytes(pdf_with_pages(FACT_PAGES))
    out = io.StringIO()

    async def conversation() -> str | None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            console = ConsoleAdapter(JobClient(client, "test-console-rating"), user="ada",
                                     scope=Scope("console", "test", "rating"), out=out, reply_timeout_s=240)
            await console.handle_line("/good")  # nothing answered yet
            await console.handle_line(f"/upload {pdf}")
            await console.handle_line("/bad")  # an upload is not an answer
            await console.handle_line("What colour is the crater lake of Mount Kessler?")
            await console.handle_line("/bad it cited the railway page")
            return console.last_answer
        finally:
            await client.aclose()

    job_id = asyncio.run(conversation())
    printed = out.getvalue()
    assert printed.count("There is no answer to rate yet") == 2
    assert "marked as wrong" in printed
    assert job_id is not None

    # The worker records the answer just after posting it: wait for that entry, not for a fixed time.
    deadline = time.monotonic() + 60
    while not InteractionLog(redis_client).rated_answers() and time.monotonic() < deadline:
        time.sleep(0.05)
    (rated,) = InteractionLog(redis_client).rated_answers()
    assert rated.answer.job_id == job_id and rated.rating == "bad"
    assert redis_client.xlen(keys.INTERACTIONS_STREAM) == 2  # the answer and one rating

    exported = subprocess.run([sys.executable, "-m", "phobos", "feedback", "export"], env=phobos_env(redis_server.url),
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    (line,) = [json.loads(raw) for raw in exported.stdout.splitlines()]
    assert line["id"] == job_id and line["question"] == "What colour is the crater lake of Mount Kessler?"
    assert line["rating"] == "bad" and line["reasons"] == ["it cited the railway page"]
