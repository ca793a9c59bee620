"""One worker process holding several asks at once: real redis-server, real `phobos worker` processes.

The echo model is configured so that overlap is proven, not timed: ``test_barrier=8`` makes each answer
wait for seven others before its first piece (an answer fails if they never run together), so a first
barrier's log line means all eight were generating at the same moment; ``test_hold_file`` then holds
them after their first piece until the test lets them go.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from core.backends.echo import EchoGenerator
from core.registry import ModelSpec
from core.scope import Scope
from jobs import keys
from jobs.admission import Admission
from jobs.client import JobClient
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from tests.conftest import RedisServer
from tests.pdfs import pdf_with_pages
from tests.test_chaos import collect, terminal_counts
from tests.test_ingest_resume import short_page
from workers.runner import choose_concurrency

pytestmark = pytest.mark.serving

MODEL = "conc-echo"
ASKS = 8
WAIT_S = 120.0
TEXT = "one two three four five six"


def models_file(tmp_path: Path, name: str, weights: str) -> Path:
    path = tmp_path / name
    path.write_text(f'[models.{MODEL}]\nbackend = "echo"\ncontext_tokens = 100000\nmax_new_tokens = 256\n'
                    f'weights = "{weights}"\n')
    return path


def worker_env(models: Path, **extra: str) -> dict[str, str]:
    return {"PHOBOS_MODELS_FILE": str(models), "PHOBOS_DEFAULT_MODEL": MODEL, "PHOBOS_LAZY_EMBEDDER": "true",
            "PHOBOS_RECLAIM_IDLE_S": "1.0", **extra}


def job(jobs: JobClient, job_id: str, kind: JobKind = JobKind.ASK, user: str = "u0") -> Job:
    return Job(id=job_id, kind=kind, scope=Scope("console", "conc", job_id.replace(":", "-")), user=user,
               reply_to=jobs.reply_stream, text=TEXT if kind is JobKind.ASK else "")


def events_by_job(client: redis.Redis, stream: str) -> dict[str, list[ReplyEvent]]:
    found: dict[str, list[ReplyEvent]] = {}
    for _, fields in client.xrange(stream):  # type: ignore[union-attr]
        event = ReplyEvent.from_json(fields[b"event"])
        found.setdefault(event.job_id, []).append(event)
    return found


def wait_until_all_generating(log: Path) -> None:
    """The echo model logged that its barrier let all the asks through together."""
    wait_for_line(log, f"echo: {ASKS} answers generating together")


def wait_for_line(log: Path, line: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while line not in log.read_text():
        assert time.monotonic() < deadline, f"never logged {line!r}: " + log.read_text()[-3000:]
        time.sleep(0.05)


async def submit_asks(jobs: JobClient) -> set[str]:
    ids = {f"conc:{i}" for i in range(ASKS)}
    for i, job_id in enumerate(sorted(ids)):  # one user each: the per-user queue limit is not under test
        result = await jobs.submit(job(jobs, job_id, user=f"u{i}"))
        assert result.status is Admission.QUEUED, result
    return ids


def test_eight_asks_run_together_each_answered_once_and_status_answers_meanwhile(
        redis_server: RedisServer, redis_client: redis.Redis, start_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hold = tmp_path / "let-them-finish"
    models = models_file(tmp_path, "models.toml",
                         f"delay_s=0.01;max_concurrency={ASKS};test_barrier={ASKS};test_hold_file={hold}")
    worker = start_worker(models=MODEL, **worker_env(models))  # concurrency 0: chosen from max_concurrency

    async def scenario() -> tuple[dict[str, ReplyEvent], Counter[str], ReplyEvent]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            jobs = JobClient(client, "conc-adapter")
            await jobs.start_listening()
            ids = await submit_asks(jobs)
            await asyncio.to_thread(wait_until_all_generating, worker.log_path)
            await jobs.submit(job(jobs, "conc:status", JobKind.STATUS, user="status-user"))
            status = (await collect(jobs, {"conc:status"}, timeout_s=WAIT_S))["conc:status"]
            # The eight are still held in generation: the status did not wait for any of them.
            held = {i for i, events in events_by_job(redis_client, jobs.reply_stream).items()
                    if i in ids and not any(e.is_terminal for e in events)}
            assert held == ids
            hold.touch()
            finals = await collect(jobs, ids, timeout_s=WAIT_S)
            return finals, terminal_counts(redis_client, jobs.reply_stream), status
        finally:
            await client.aclose()

    finals, counts, status = asyncio.run(scenario())
    assert status.type is ReplyType.FINAL and "worker(s) live" in status.text
    assert len(finals) == ASKS
    assert all(f.type is ReplyType.FINAL and "six" in f.text for f in finals.values())
    assert all(counts[i] == 1 for i in finals)
    assert f"holds up to {ASKS} ask(s) at once (chosen from" in worker.log_path.read_text()


def asks_outlive_their_worker(redis_server: RedisServer, redis_client: redis.Redis, start_worker,  # type: ignore[no-untyped-def]
                              tmp_path: Path, adapter: str, stop: Callable[[Any], None],
                              **env: str) -> tuple[dict[str, ReplyEvent], Counter[str], Any]:
    """ASKS asks held mid-generation by one worker; ``stop(worker)`` ends it; a plain worker takes over.
    Returns the final event of each ask, the terminal events counted per job, and the first worker."""
    never = tmp_path / "never-created"
    held_models = models_file(tmp_path, "held.toml",
                              f"delay_s=0.01;max_concurrency={ASKS};test_barrier={ASKS};test_hold_file={never}")
    first = start_worker(models=MODEL, **worker_env(held_models, PHOBOS_WORKER_CONCURRENCY=str(ASKS), **env))

    async def scenario() -> tuple[dict[str, ReplyEvent], Counter[str]]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            jobs = JobClient(client, adapter)
            await jobs.start_listening()
            ids = await submit_asks(jobs)
            await asyncio.to_thread(wait_until_all_generating, first.log_path)
            await asyncio.to_thread(stop, first)
            plain = models_file(tmp_path, "plain.toml", f"delay_s=0.01;max_concurrency={ASKS}")
            await asyncio.to_thread(start_worker, models=MODEL,
                                    **worker_env(plain, PHOBOS_WORKER_CONCURRENCY=str(ASKS)))
            finals = await collect(jobs, ids, timeout_s=WAIT_S)
            return finals, terminal_counts(redis_client, jobs.reply_stream)
        finally:
            await client.aclose()

    finals, counts = asyncio.run(scenario())
    assert len(finals) == ASKS
    assert all(f.type is ReplyType.FINAL and "six" in f.text for f in finals.values())
    assert all(counts[i] == 1 for i in finals)
    return finals, counts, first


def test_eight_asks_in_flight_when_the_worker_is_killed_are_answered_once_by_another(
        redis_server: RedisServer, redis_client: redis.Redis, start_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def kill(worker) -> None:  # type: ignore[no-untyped-def]
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()

    asks_outlive_their_worker(redis_server, redis_client, start_worker, tmp_path, "chaos-adapter", kill)
    assert redis_client.xpending(keys.JOBS_STREAM, keys.WORKER_GROUP)["pending"] == 0  # type: ignore[index]


def test_sigterm_hands_back_every_ask_in_flight_and_another_worker_answers_them_once(
        redis_server: RedisServer, redis_client: redis.Redis, start_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def terminate(worker) -> None:  # type: ignore[no-untyped-def]
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(WAIT_S) == 0

    _, _, stopping = asks_outlive_their_worker(redis_server, redis_client, start_worker, tmp_path, "term-adapter",
                                               terminate, PHOBOS_SHUTDOWN_GRACE_S="0.5")
    assert stopping.log_path.read_text().count("handed back to the queue") == ASKS


def test_an_ask_is_answered_while_a_300_page_ingest_runs_on_the_same_worker(
        redis_server: RedisServer, redis_client: redis.Redis, start_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    models = models_file(tmp_path, "models.toml", "delay_s=0.01;max_concurrency=2")
    start_worker(models=MODEL, **worker_env(models, PHOBOS_INGEST_SLICE_PAGES="50"))  # auto: 2
    scope = Scope("console", "conc", "ingest")
    reply_to = keys.reply_stream("conc-ingest")
    ingest = Job(id="conc:ingest", kind=JobKind.INGEST, scope=scope, user="u", reply_to=reply_to,
                 file_name="big.pdf")
    ask = Job(id="conc:ask", kind=JobKind.ASK, scope=scope, user="v", reply_to=reply_to, text=TEXT)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            jobs = JobClient(client, "conc-ingest")
            assert (await jobs.submit(ingest, pdf_with_pages([short_page(n) for n in range(300)]))).is_queued
            await asyncio.to_thread(wait_for_event, redis_client, reply_to, ingest.id, ReplyType.PROGRESS)
            assert (await jobs.submit(ask)).is_queued
        finally:
            await client.aclose()

    asyncio.run(scenario())
    wait_for_event(redis_client, reply_to, ingest.id, ReplyType.FINAL)
    order = [(e.job_id, e.type) for e in events_on(redis_client, reply_to) if e.is_terminal]
    assert order == [(ask.id, ReplyType.FINAL), (ingest.id, ReplyType.FINAL)]  # the ask did not wait for it


def events_on(client: redis.Redis, stream: str) -> list[ReplyEvent]:
    return [ReplyEvent.from_json(f[b"event"]) for _, f in client.xrange(stream)]  # type: ignore[union-attr]


def wait_for_event(client: redis.Redis, stream: str, job_id: str, kind: ReplyType) -> None:
    deadline = time.monotonic() + WAIT_S
    while not any(e.job_id == job_id and e.type is kind for e in events_on(client, stream)):
        assert time.monotonic() < deadline, f"no {kind} event for {job_id}"
        time.sleep(0.05)


def test_a_model_that_runs_one_answer_at_a_time_is_never_called_concurrently(
        redis_server: RedisServer, redis_client: redis.Redis, start_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hold = tmp_path / "let-them-finish"
    models = models_file(tmp_path, "models.toml", f"delay_s=0.01;max_concurrency=1;test_hold_file={hold}")
    worker = start_worker(models=MODEL, **worker_env(models, PHOBOS_WORKER_CONCURRENCY=str(ASKS)))

    async def scenario() -> dict[str, ReplyEvent]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            jobs = JobClient(client, "one-adapter")
            await jobs.start_listening()
            ids = await submit_asks(jobs)
            await asyncio.to_thread(wait_for_line, worker.log_path, f"{ASKS} job(s) in hand here")
            hold.touch()  # the first answer was held in generation until all were in hand
            return await collect(jobs, ids, timeout_s=WAIT_S)
        finally:
            await client.aclose()

    finals = asyncio.run(scenario())
    assert all(f.type is ReplyType.FINAL and "six" in f.text for f in finals.values()) and len(finals) == ASKS
    log = worker.log_path.read_text()
    assert "echo: 1 answer(s) in generation at once" in log
    assert "echo: 2 answer(s)" not in log  # held all at once, the model ran them one at a time


def test_auto_concurrency_is_the_largest_a_served_model_runs_at_once() -> None:
    def echo(weights: str) -> EchoGenerator:
        return EchoGenerator(ModelSpec(name="e", backend="echo", weights=weights))

    batched, single = echo("max_concurrency=8"), echo("")
    assert choose_concurrency(0, {"batched": batched, "single": single}) == 8
    assert choose_concurrency(0, {"single": single}) == 1
    assert choose_concurrency(3, {"batched": batched}) == 3  # PHOBOS_WORKER_CONCURRENCY wins
    assert choose_concurrency(0, {}) == 1
