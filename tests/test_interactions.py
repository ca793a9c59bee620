"""The interaction log: answers recorded by a real worker, ratings, retention, export and stats via the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import redis.asyncio as aioredis

from core.scope import Scope
from jobs import keys
from jobs.client import JobClient, run_job
from jobs.interactions import AnsweredQuestion, InteractionLog, Source, export_rated, rating_stats
from jobs.protocol import Job, JobKind, ReplyType
from tests.conftest import ROOT, phobos_env
from tests.pdfs import FACT_PAGES, pdf_with_pages

SCOPE = Scope("console", "test", "ratings")


def submit(redis_url: str, job_id: str, kind: JobKind, text: str = "", blob: bytes | None = None):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        client = aioredis.Redis.from_url(redis_url)
        try:
            jobs = JobClient(client, "test-ratings")
            job = Job(id=job_id, kind=kind, scope=SCOPE, user="u1", reply_to=jobs.reply_stream, text=text,
                      file_name="facts.pdf" if blob else None)
            return await run_job(jobs, job, blob, lambda event: None, timeout_s=240)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_rated_answer_comes_out_of_feedback_export(redis_server, redis_client, start_worker) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_LOG_TEXT="true")
    uploaded = submit(redis_server.url, "r:ingest", JobKind.INGEST, blob=pdf_with_pages(FACT_PAGES))
    assert uploaded is not None and uploaded.type is ReplyType.FINAL
    answer = submit(redis_server.url, "r:ask", JobKind.ASK, "What colour is the crater lake of Mount Kessler?")
    assert answer is not None and answer.type is ReplyType.FINAL

    log = InteractionLog(redis_client)
    # The worker records the answer just after posting it: wait for that entry, not for a fixed time.
    deadline = time.monotonic() + 60
    while not redis_client.xlen(keys.INTERACTIONS_STREAM) and time.monotonic() < deadline:
        time.sleep(0.05)
    log.rate("r:ask", "good", rater="slack:T1:U1")
    log.rate("r:ask", "bad", rater="slack:T1:U2", reason="it cited the railway page")
    (rated,) = log.rated_answers()
    assert rated.answer.model == "extractive" and rated.answer.scope_key == SCOPE.key
    assert rated.answer.sources and rated.answer.sources[0].file_name == "facts.pdf"
    assert rated.answer.answer_s >= 0 and rated.answer.queue_wait_s >= 0
    assert rated.rating == "bad"  # a tie counts as bad: someone found it wrong

    exported = subprocess.run([sys.executable, "-m", "phobos", "feedback", "export"], env=phobos_env(redis_server.url),
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    (line,) = [json.loads(raw) for raw in exported.stdout.splitlines()]
    assert line["id"] == "r:ask" and line["question"] == "What colour is the crater lake of Mount Kessler?"
    assert line["doc"] == "facts.pdf" and 3 in line["pages"]
    assert line["rating"] == "bad" and line["reasons"] == ["it cited the railway page"]
    assert {"id", "question", "doc", "pages", "answer", "evidence", "kind"} <= set(line)

    stats = subprocess.run([sys.executable, "-m", "phobos", "feedback", "stats"], env=phobos_env(redis_server.url),
                           cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert "extractive" in stats.stdout and "0%" in stats.stdout


def test_a_second_click_replaces_the_first_and_unrated_answers_are_not_exported(redis_client) -> None:
    log = InteractionLog(redis_client, log_text=True)
    for job_id in ("a", "b"):
        log.record_answer(AnsweredQuestion(job_id, SCOPE.key, "m", (Source("f.pdf", (2,), 0.5),), 0.1, 0.2, 1.0,
                                           True, question=f"question {job_id}", answer="x"))
    log.rate("a", "bad", rater="U1")
    log.rate("a", "good", rater="U1")  # the same person changed their mind
    rated = log.rated_answers()
    assert [r.answer.job_id for r in rated] == ["a"] and rated[0].rating == "good"
    lines, without_text = export_rated(rated)
    assert [line["id"] for line in lines] == ["a"] and without_text == 0
    (row,) = rating_stats(rated)
    assert row["model"] == "m" and row["good"] == 1 and row["good_share"] == 1.0


def test_text_is_kept_only_when_asked_and_the_log_is_bounded(redis_client) -> None:
    private = InteractionLog(redis_client, log_text=False, max_entries=5)
    private.record_answer(AnsweredQuestion("p", SCOPE.key, "m", (), 0.0, None, 0.1, False,
                                           question="my salary is 5000", answer="secret"))
    raw = redis_client.xrange(keys.INTERACTIONS_STREAM)
    assert b"salary" not in raw[0][1][b"data"] and b"secret" not in raw[0][1][b"data"]
    private.rate("p", "bad", rater="U9", reason="wrong")
    lines, without_text = export_rated(private.rated_answers())
    assert lines == [] and without_text == 1  # no question text to export

    for i in range(10):
        private.rate("p", "good", rater=f"U{i}")
    assert redis_client.xlen(keys.INTERACTIONS_STREAM) == 5

    # Entries older than the retention go on the next add.
    aged = InteractionLog(redis_client, retention_days=1)
    redis_client.delete(keys.INTERACTIONS_STREAM)
    redis_client.xadd(keys.INTERACTIONS_STREAM, {"type": "rating", "job": "old", "data": "{}"}, id="1000-0")
    aged.rate("new", "good", rater="U1")
    assert [fields[b"job"] for _, fields in redis_client.xrange(keys.INTERACTIONS_STREAM)] == [b"new"]
