"""The queue's parts against a real Redis, in-process: admission, delivery, leases, dead letters, trimming."""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio as aioredis

from core.backends.echo import EchoGenerator
from core.ingest import IngestLimits
from core.registry import ModelRegistry, ModelSpec
from core.scope import Scope
from jobs import keys
from jobs.admission import AdmissionLimits
from jobs.client import JobClient
from jobs.heartbeats import WorkerInfo, announce
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from workers import deadletter
from workers.delivery import JobQueue
from workers.settings import WorkerSettings
from workers.worker import Worker

SCOPE = Scope("console", "q", "c")


def job(n: int, user: str = "u", **fields) -> Job:  # type: ignore[no-untyped-def]
    fields.setdefault("text", f"question {n}")
    return Job(id=f"q:{n}", kind=JobKind.ASK, scope=SCOPE, user=user, reply_to=keys.reply_stream("qa"), **fields)


def submit_all(url: str, jobs: list[Job], limits: AdmissionLimits | None = None) -> list:  # type: ignore[type-arg]
    async def run() -> list:  # type: ignore[type-arg]
        client = aioredis.Redis.from_url(url)
        adapter = JobClient(client, "qa", limits=limits)
        results = [await adapter.submit(j) for j in jobs]
        await client.aclose()
        return results

    return asyncio.run(run())


def replies(client: redis.Redis) -> list[ReplyEvent]:
    return [ReplyEvent.from_json(f[b"event"]) for _, f in client.xrange(keys.reply_stream("qa"))]  # type: ignore[union-attr]


def test_position_and_limits(redis_server, redis_client) -> None:
    limits = AdmissionLimits(rate_burst=3, rate_per_min=1, max_queue_depth=4, max_queued_per_user=10)
    results = submit_all(redis_server.url, [job(n, user="a") for n in range(4)] + [job(9, user="b"),
                                                                                    job(10, user="c")], limits)
    assert [r.status for r in results] == ["queued"] * 3 + ["rate_limited", "queued", "queue_full"]
    assert [r.position for r in results[:3]] == [0, 1, 2] and results[4].position == 3
    assert results[2].message() == "You are #3 in the queue."
    events = replies(redis_client)
    assert [e.type for e in events] == [ReplyType.QUEUED] * 3 + [ReplyType.ERROR, ReplyType.QUEUED, ReplyType.ERROR]
    assert "asking faster" in events[3].text and "too busy" in events[5].text

    per_user = AdmissionLimits(max_queued_per_user=1)
    assert [r.status for r in submit_all(redis_server.url, [job(20, user="d"), job(21, user="d")], per_user)] == \
        ["queued", "user_queue_full"]


def test_lease_takeover_means_only_the_new_holder_answers(redis_client) -> None:
    slow = JobQueue(redis_client, "slow", reclaim_idle_s=0.05)
    fast = JobQueue(redis_client, "fast", reclaim_idle_s=0.05)
    slow.ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(1).to_json()})
    redis_client.set(keys.QUEUE_DEPTH_KEY, 1)
    held = slow.take(100)
    assert held is not None and held.times_delivered == 1
    time.sleep(0.1)
    fast.drain_own = False
    taken = fast.take(100)
    assert taken is not None and taken.entry_id == held.entry_id and taken.times_delivered == 2
    assert not slow.renew(held)  # the slow worker learns it lost the job
    assert not slow.finish(held, "u", keys.reply_stream("qa"), "{}")
    assert fast.renew(taken)
    assert fast.finish(taken, "u", keys.reply_stream("qa"), "{}")
    assert not fast.finish(taken, "u", keys.reply_stream("qa"), "{}")  # once only
    assert redis_client.xlen(keys.reply_stream("qa")) == 1
    assert redis_client.get(keys.QUEUE_DEPTH_KEY) == b"0"


def test_hand_back_does_not_count_a_delivery_and_own_pending_comes_first(redis_client) -> None:
    first = JobQueue(redis_client, "w1", reclaim_idle_s=30)
    first.ensure_group()
    for n in range(2):
        redis_client.xadd(keys.JOBS_STREAM, {"job": job(n).to_json()})
    held = first.take(100)
    assert held is not None
    restarted = JobQueue(redis_client, "w1", reclaim_idle_s=30)  # same name: takes back what it held
    again = restarted.take(100)
    assert again is not None and again.entry_id == held.entry_id and again.times_delivered == 2
    assert restarted.hand_back(again)
    other = JobQueue(redis_client, "w2", reclaim_idle_s=30)
    other.drain_own = False
    taken = other.take(100)
    assert taken is not None and taken.entry_id == held.entry_id and taken.times_delivered == 2


def test_trim_keeps_pending_and_undelivered_entries(redis_client) -> None:
    queue = JobQueue(redis_client, "w", reclaim_idle_s=30)
    queue.ensure_group()
    ids = [redis_client.xadd(keys.JOBS_STREAM, {"job": job(n).to_json()}) for n in range(5)]
    first = queue.take(100)
    second = queue.take(100)
    assert first is not None and second is not None
    queue.finish(second, "u", None, "")  # acked, but the older first one is still pending
    queue.trim()
    assert [i for i, _ in redis_client.xrange(keys.JOBS_STREAM)] == ids
    queue.finish(first, "u", None, "")
    queue.trim()
    assert [i for i, _ in redis_client.xrange(keys.JOBS_STREAM)] == ids[1:]  # from last-delivered on
    remaining = [queue.take(100) for _ in range(3)]
    assert [d.entry_id for d in remaining if d] == [i.decode() for i in ids[2:]]


def test_dead_letter_retry_and_drop(redis_client) -> None:
    queue = JobQueue(redis_client, "w", reclaim_idle_s=30)
    queue.ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(1).to_json()})
    held = queue.take(100)
    assert held is not None
    dead = job(1)
    record = deadletter.dead_record(dead.to_json(), held.entry_id, 4, "max deliveries")
    assert queue.finish(held, dead.user, dead.reply_to, deadletter.failure_event(dead, 4).to_json(), record)
    (entry,) = deadletter.list_dead(redis_client)
    assert entry.deliveries == 4 and entry.job() == dead
    assert "set aside" in replies(redis_client)[0].text
    assert deadletter.retry(redis_client, entry.dead_id) == "q:1#retry-1"
    assert deadletter.list_dead(redis_client) == []
    again = queue.take(100)
    assert again is not None and again.job().id == "q:1#retry-1"
    assert not deadletter.drop(redis_client, entry.dead_id)


class NoEmbedder:
    name, dim, max_tokens = "none", 4, 10


def test_an_expired_job_gets_a_clear_reply_and_a_slow_one_is_stopped(redis_client) -> None:
    spec = ModelSpec(name="echo", backend="echo", weights="delay_s=0.05")
    config = WorkerSettings(default_model="echo", worker_id="w",
                          generation_timeout_s=0.3)
    worker = Worker(redis_client, NoEmbedder(), {"echo": EchoGenerator(spec)},  # type: ignore[arg-type]
                    ModelRegistry({"echo": spec}), config, ingest_limits=IngestLimits(1, 1, 10, 0))
    worker.ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(1, deadline_at=time.time() - 1).to_json()})
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(2, text="x " * 50).to_json()})
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(3).to_json()})
    worker.run(burst=True)
    finals = {e.job_id: e for e in replies(redis_client) if e.is_terminal}
    assert finals["q:1"].type is ReplyType.ERROR and "deadline" in finals["q:1"].text
    assert finals["q:2"].type is ReplyType.ERROR and "took too long" in finals["q:2"].text
    assert finals["q:3"].type is ReplyType.FINAL and "question 3" in finals["q:3"].text
    assert redis_client.xpending(keys.JOBS_STREAM, keys.WORKER_GROUP)["pending"] == 0


def test_a_retried_answer_replaces_the_streamed_text() -> None:
    from bot.streaming import StreamedAnswer

    shown: list[str] = []

    async def render(text: str, is_final: bool) -> None:
        shown.append(text)

    async def run() -> str:
        answer = StreamedAnswer(render, min_interval_s=0)
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=1, text="half an ans", attempt=1))
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=1, text="the whole ", attempt=2))
        await answer.feed(ReplyEvent("j", ReplyType.DELTA, seq=2, text="answer", attempt=2))
        return answer.text

    assert asyncio.run(run()) == "the whole answer"
    assert shown[-1] == "the whole answer"


def echo_worker(client: redis.Redis, worker_id: str, *models: str) -> Worker:
    """An in-process worker serving ``models``, each on the echo backend (the first is its default)."""
    specs = {name: ModelSpec(name=name, backend="echo") for name in ("echo-a", "echo-b", "echo-c")}
    config = WorkerSettings(default_model=models[0], worker_id=worker_id)
    worker = Worker(client, NoEmbedder(), {m: EchoGenerator(specs[m]) for m in models},  # type: ignore[arg-type]
                    ModelRegistry(specs), config, ingest_limits=IngestLimits(1, 1, 10, 0))
    worker.ensure_group()
    return worker


def test_a_queue_reads_several_streams_each_with_its_guarantees(redis_client) -> None:
    streams = [keys.model_stream("m"), keys.JOBS_STREAM]
    queue = JobQueue(redis_client, "w", reclaim_idle_s=0.05, streams=streams)
    queue.ensure_group()
    general = redis_client.xadd(keys.JOBS_STREAM, {"job": job(1).to_json()})
    forwarded = redis_client.xadd(keys.model_stream("m"), {"job": job(2).to_json()})
    first = queue.take(100)  # one read returns an entry from each stream: the other is handed back
    assert first is not None and first.stream == keys.model_stream("m") and first.entry_id == forwarded.decode()
    second = queue.take(100)
    assert second is not None and second.stream == keys.JOBS_STREAM and second.entry_id == general.decode()
    assert second.times_delivered == 1  # handing back did not count a delivery
    assert queue.renew(first) and queue.renew(second)

    time.sleep(0.1)  # both leases lapse: another worker reading both streams takes them over
    other = JobQueue(redis_client, "other", reclaim_idle_s=0.05, streams=streams)
    other.drain_own = False
    taken = [other.take(100), other.take(100)]
    assert {(d.stream, d.times_delivered) for d in taken if d} == {(s, 2) for s in streams}
    assert not queue.finish(first, "u", keys.reply_stream("qa"), "{}")
    assert all(d and other.finish(d, "u", keys.reply_stream("qa"), "{}") for d in taken)
    later = [redis_client.xadd(stream, {"job": job(3).to_json()}) for stream in streams]
    again = [other.take(100), other.take(100)]
    assert all(d and other.finish(d, "u", None) for d in again)
    assert other.trim() == 2  # each stream keeps entries from its last-delivered one on
    assert [redis_client.xrange(stream)[0][0] for stream in streams] == later


def test_an_ask_for_a_model_served_elsewhere_is_forwarded_not_answered(redis_client) -> None:
    serves_a = echo_worker(redis_client, "wa", "echo-a")
    serves_b = echo_worker(redis_client, "wb", "echo-b")
    announce(redis_client, WorkerInfo("wb", "h", 1, ["echo-b"], time.time()), ttl_s=30)
    submit_all(f"unix://{redis_client.connection_pool.connection_kwargs['path']}",
               [job(1, model="echo-b"), job(2), job(3, model="echo-c")])
    serves_a.run(burst=True)
    finals = {e.job_id: e for e in replies(redis_client) if e.is_terminal}
    assert set(finals) == {"q:2", "q:3"}  # q:1 is still on its way
    assert "question 2" in finals["q:2"].text
    assert finals["q:3"].type is ReplyType.ERROR and "No worker serves the model 'echo-c'" in finals["q:3"].text
    assert "Live models: echo-a, echo-b." in finals["q:3"].text
    (entry,) = redis_client.xrange(keys.model_stream("echo-b"))
    assert Job.from_json(entry[1][b"job"]) == job(1, model="echo-b")
    assert redis_client.xpending(keys.JOBS_STREAM, keys.WORKER_GROUP)["pending"] == 0
    assert redis_client.get(keys.QUEUE_DEPTH_KEY) == b"1"  # the forwarded job still counts as queued

    serves_b.run(burst=True)
    answered = [e for e in replies(redis_client) if e.job_id == "q:1" and e.is_terminal]
    assert len(answered) == 1 and answered[0].type is ReplyType.FINAL and "question 1" in answered[0].text
    assert redis_client.get(keys.QUEUE_DEPTH_KEY) == b"0"
    assert redis_client.get(keys.USER_QUEUED_PREFIX + job(1).sender_key) == b"0"
    assert redis_client.xpending(keys.model_stream("echo-b"), keys.WORKER_GROUP)["pending"] == 0
