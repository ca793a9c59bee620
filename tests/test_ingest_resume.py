"""An ingest stopped between slices (a shutdown, a takeover) keeps its finished slices; the next run
embeds only the pages after them, and the document comes out as an uninterrupted ingest makes it."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.ingest import IngestInterrupted, IngestLimits, ingest_pdf
from core.scope import Scope
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from tests.pdfs import pdf_with_pages
from workers.delivery import JobQueue
from workers.ingest_progress import RedisProgressStore
from workers.store import RedisDocumentStore

WAIT_S = 300.0
WORDS = ("harbour", "ledger", "copper", "meadow", "signal", "quarry", "lantern", "orchard", "glacier", "tannery")


def page_text(n: int) -> str:
    """A page of distinct sentences, about 150 words, so each page makes about one passage."""
    return " ".join(f"Section {n} line {k} records the {WORDS[(n + k) % 10]} figure {n * 31 + k} for "
                    f"the {WORDS[(n * 3 + k) % 10]} survey of district {k}." for k in range(10))


def short_page(n: int) -> str:
    """About 40 words: a passage spans several pages, so 300 pages stay quick to embed."""
    return " ".join(f"Page {n} notes {WORDS[(n + k) % 10]} reading {n * 7 + k} in block {k}." for k in range(4))


def taken(client, consumer: str) -> tuple[JobQueue, object]:  # type: ignore[no-untyped-def]
    queue = JobQueue(client, consumer, reclaim_idle_s=30)
    queue.drain_own = False
    delivery = queue.take(100)
    assert delivery is not None
    return queue, delivery


def test_an_interrupted_ingest_resumes_after_its_saved_slices(redis_client, embedder) -> None:
    limits = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=120, overlap_tokens=20, slice_pages=4)
    data = pdf_with_pages([page_text(n) for n in range(12)])
    whole = ingest_pdf(data, "whole.pdf", "test:w:whole", embedder, RedisDocumentStore(redis_client), limits)

    JobQueue(redis_client, "any", 30).ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": "{}"})
    first_queue, first = taken(redis_client, "first")
    store = RedisDocumentStore(redis_client)
    slices = []
    with pytest.raises(IngestInterrupted) as stopped:
        ingest_pdf(data, "part.pdf", "test:w:part", embedder, store, limits,
                   saved=RedisProgressStore(redis_client, first_queue.fence(first), "part.pdf"),  # type: ignore[arg-type]
                   between_slices=lambda: slices.append(1), should_stop=lambda: len(slices) >= 2)
    assert stopped.value.pages_done == 8 and not stopped.value.lost
    assert store.list_documents(["test:w:part"]) == []  # nothing half-stored

    first_queue.hand_back(first)  # type: ignore[arg-type]
    second_queue, second = taken(redis_client, "second")
    stale = RedisProgressStore(redis_client, first_queue.fence(first), "part.pdf")  # type: ignore[arg-type]
    with pytest.raises(IngestInterrupted) as refused:  # the first worker may no longer write
        ingest_pdf(data, "part.pdf", "test:w:part", embedder, store, limits, saved=stale)
    assert refused.value.lost

    resumed = ingest_pdf(data, "part.pdf", "test:w:part", embedder, store, limits,
                         saved=RedisProgressStore(redis_client, second_queue.fence(second), "part.pdf"))  # type: ignore[arg-type]
    assert resumed.resumed > 0 and resumed.embedded + resumed.resumed == whole.info.chunks
    assert resumed.embedded < whole.info.chunks  # the saved slices were not embedded again
    part = store.load_index("test:w:part", embedder.dim)
    reference = store.load_index("test:w:whole", embedder.dim)
    assert [c.text for c in part.chunks] == [c.text for c in reference.chunks]
    assert [c.ordinal for c in part.chunks] == list(range(whole.info.chunks))
    assert abs(part.vectors - reference.vectors).max() < 1e-4
    assert not redis_client.keys(keys.INGEST_PROGRESS_PREFIX + "*")  # cleared once stored


ASK_WORDS = 100  # x 50 ms: the ask a worker serves between two slices runs long enough to be caught


def test_sigterm_during_a_300_page_ingest_hands_it_over_without_reembedding(redis_server, redis_client,
                                                                             start_worker, tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.slow-echo]\nbackend = "echo"\ncontext_tokens = 100000\nmax_new_tokens = 1000\n'
                      'weights = "delay_s=0.05"\n')
    env = {"PHOBOS_MODELS_FILE": str(models), "PHOBOS_DEFAULT_MODEL": "slow-echo", "PHOBOS_INGEST_SLICE_PAGES": "50",
           "PHOBOS_SHUTDOWN_GRACE_S": "600", "PHOBOS_RECLAIM_IDLE_S": "30"}
    first = start_worker("slow-echo", PHOBOS_WORKER_ID="ingest-first", **env)
    data = pdf_with_pages([short_page(n) for n in range(300)])
    scope = Scope("console", "resume", "c")
    reply_to = keys.reply_stream("resume")
    ingest = Job(id="resume:ingest", kind=JobKind.INGEST, scope=scope, user="u", reply_to=reply_to,
                 file_name="big.pdf")
    ask = Job(id="resume:ask", kind=JobKind.ASK, scope=scope, user="v", reply_to=reply_to,
              text=" ".join(f"w{n}" for n in range(ASK_WORDS)))

    async def submit() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        jobs = JobClient(client, "resume")
        assert (await jobs.submit(ingest, data)).is_queued
        assert (await jobs.submit(ask)).is_queued  # served by the first worker between two slices
        await client.aclose()

    asyncio.run(submit())
    wait_for(lambda: "job resume:ask entry" in first.log_path.read_text(), "the ask to start between slices")
    first.process.send_signal(signal.SIGTERM)
    wait_for(lambda: first.process.poll() is not None, "the first worker to exit")
    first_log = first.log_path.read_text()
    assert first.process.returncode == 0, first_log[-3000:]
    assert "handing it back with its progress" in first_log
    saved_by_first = sum(int(n) for n in re.findall(r"(\d+) passages embedded in this slice", first_log))
    assert saved_by_first > 0

    second = start_worker("slow-echo", PHOBOS_WORKER_ID="ingest-second", **env)
    final = wait_for_final(redis_client, reply_to, ingest.id)
    assert final.type is ReplyType.FINAL and "Indexed big.pdf: 300 pages" in final.text, final.text
    total = int(re.search(r"(\d+) passages", final.text).group(1))  # type: ignore[union-attr]
    second_log = second.log_path.read_text()
    resumed_at = re.search(r"resuming the ingest of big.pdf at page (\d+): (\d+) passages already embedded",
                           second_log)
    assert resumed_at is not None and int(resumed_at.group(1)) >= 50
    assert int(resumed_at.group(2)) == saved_by_first
    counts = re.search(r"ingest of big.pdf: (\d+) passages embedded here, (\d+) taken", second_log)
    assert counts is not None
    embedded_here, reused = int(counts.group(1)), int(counts.group(2))
    assert reused == saved_by_first and embedded_here + reused == total  # every passage embedded once
    assert re.search(r"job resume:ingest entry \S+ delivery 1 started", second_log)  # not counted as a failure
    assert redis_client.xlen(keys.DEAD_STREAM) == 0
    assert wait_for_final(redis_client, reply_to, ask.id).type is ReplyType.FINAL
    events = [ReplyEvent.from_json(f[b"event"]) for _, f in redis_client.xrange(reply_to)]  # type: ignore[union-attr]
    assert not [e for e in events if e.type is ReplyType.ERROR]


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_final(client, stream: str, job_id: str) -> ReplyEvent:  # type: ignore[no-untyped-def]
    found: list[ReplyEvent] = []

    def arrived() -> bool:
        found[:] = [e for e in (ReplyEvent.from_json(f[b"event"]) for _, f in client.xrange(stream))
                    if e.job_id == job_id and e.is_terminal]
        return bool(found)

    wait_for(arrived, f"the answer to {job_id}")
    assert len(found) == 1
    return found[0]
