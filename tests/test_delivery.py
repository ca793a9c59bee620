"""Delivery under contention, against a real Redis: reclaiming behind live leases, fencing each take."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from core.backends.echo import EchoGenerator
from core.ingest import IngestLimits
from core.registry import ModelRegistry, ModelSpec
from jobs import keys
from jobs.protocol import ReplyEvent, ReplyType
from tests.test_queue import NoEmbedder, job, replies
from workers.delivery import RECLAIM_CALLS_PER_TAKE, JobQueue
from workers.replies import ReplyPublisher
from workers.settings import WorkerSettings
from workers.worker import Worker

RECLAIM_IDLE_S = 30.0
WAIT_S = 60.0


def owners(client: redis.Redis) -> dict[str, str]:
    pending: Any = client.xpending_range(keys.JOBS_STREAM, keys.WORKER_GROUP, min="-", max="+", count=10_000)
    return {p["message_id"].decode(): p["consumer"].decode() for p in pending}


def looks_dead(client: redis.Redis, entry_id: str, consumer: str) -> None:
    """Give an entry the idle time a worker that died ``RECLAIM_IDLE_S`` ago leaves behind."""
    client.xclaim(keys.JOBS_STREAM, keys.WORKER_GROUP, consumer, 0, [entry_id],
                  idle=int(RECLAIM_IDLE_S * 1000) + 1000, justid=True)


def test_a_dead_workers_job_behind_12_live_leases_is_reclaimed_by_the_next_take(redis_client) -> None:
    ids = [redis_client.xadd(keys.JOBS_STREAM, {"job": job(n).to_json()}).decode() for n in range(13)]
    JobQueue(redis_client, "any", RECLAIM_IDLE_S).ensure_group()
    live = [JobQueue(redis_client, f"live-{n}", RECLAIM_IDLE_S) for n in range(12)]
    held = [queue.take(100) for queue in live]  # 12 running jobs, their leases fresh
    dead = JobQueue(redis_client, "dead", RECLAIM_IDLE_S).take(100)
    assert dead is not None and dead.entry_id == ids[12]
    looks_dead(redis_client, dead.entry_id, "dead")

    rescuer = JobQueue(redis_client, "rescuer", RECLAIM_IDLE_S)
    rescuer.drain_own = False
    taken = rescuer.take(10)  # one take: a worker reclaims within one read's wait, well inside the idle time
    assert taken is not None and taken.entry_id == dead.entry_id and taken.times_delivered == 2
    assert owners(redis_client) == {**{d.entry_id: f"live-{n}" for n, d in enumerate(held) if d},
                                    dead.entry_id: "rescuer"}


def test_the_reclaim_cursor_is_kept_between_takes(redis_client) -> None:
    scanned_per_take = RECLAIM_CALLS_PER_TAKE * 10
    busy = scanned_per_take + 20
    for n in range(busy + 1):
        redis_client.xadd(keys.JOBS_STREAM, {"job": job(n).to_json()})
    JobQueue(redis_client, "any", RECLAIM_IDLE_S).ensure_group()
    read: Any = redis_client.xreadgroup(keys.WORKER_GROUP, "busy", {keys.JOBS_STREAM: ">"}, count=busy)
    assert len(read[0][1]) == busy
    dead = JobQueue(redis_client, "dead", RECLAIM_IDLE_S).take(100)
    assert dead is not None
    looks_dead(redis_client, dead.entry_id, "dead")

    rescuer = JobQueue(redis_client, "rescuer", RECLAIM_IDLE_S)
    rescuer.drain_own = False
    first, second = rescuer.take(10), rescuer.take(10)
    assert first is None  # the first take looked at the head only, and kept its place
    assert second is not None and second.entry_id == dead.entry_id


def test_two_processes_with_one_worker_id_cannot_both_hold_a_job(redis_server, redis_client) -> None:
    JobQueue(redis_client, "any", RECLAIM_IDLE_S).ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(1).to_json()})
    redis_client.set(keys.QUEUE_DEPTH_KEY, 1)
    reply_to = keys.reply_stream("qa")
    first = JobQueue(redis_server.client(), "same-id", RECLAIM_IDLE_S)
    held = first.take(100)
    assert held is not None
    stalled = ReplyPublisher(first, held, job(1))
    stalled.delta("half an ")
    stalled.flush()

    second = JobQueue(redis_server.client(), "same-id", RECLAIM_IDLE_S)  # started with the same id
    again = second.take(100)  # takes back "its" pending entry: the same consumer name
    assert again is not None and again.entry_id == held.entry_id and again.token > held.token
    stalled.delta("answer from the stalled one")
    stalled.flush()
    assert stalled.is_superseded
    assert not first.renew(held) and not first.hand_back(held)
    assert not first.finish(held, "u", reply_to, ReplyEvent("q:1", ReplyType.FINAL, text="stale").to_json())
    assert second.renew(again)
    assert second.post(again, reply_to, ReplyEvent("q:1", ReplyType.DELTA, text="whole ", attempt=2).to_json())
    assert second.finish(again, "u", reply_to, ReplyEvent("q:1", ReplyType.FINAL, text="whole", attempt=2).to_json())
    assert [(e.type, e.text) for e in replies(redis_client)] == [
        (ReplyType.DELTA, "half an "), (ReplyType.DELTA, "whole "), (ReplyType.FINAL, "whole")]
    assert redis_client.get(keys.QUEUE_DEPTH_KEY) == b"0"
    assert redis_client.hlen(keys.FENCE_PREFIX + keys.JOBS_STREAM) == 0  # finished: its fence is gone


def test_a_publisher_whose_lease_was_lost_cannot_publish(redis_server, redis_client) -> None:
    JobQueue(redis_client, "any", RECLAIM_IDLE_S).ensure_group()
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(1).to_json()})
    redis_client.set(keys.QUEUE_DEPTH_KEY, 1)
    stalled_queue = JobQueue(redis_server.client(), "stalled", RECLAIM_IDLE_S)
    held = stalled_queue.take(100)
    assert held is not None
    lost: list[bool] = []
    publisher = ReplyPublisher(stalled_queue, held, job(1), on_lost=lambda: lost.append(True))
    publisher.progress(1, 2, "reading")  # still its holder: posted
    assert [e.type for e in replies(redis_client)] == [ReplyType.PROGRESS]

    looks_dead(redis_client, held.entry_id, "stalled")  # its lease lapsed: another worker takes the job over
    rescuer = JobQueue(redis_server.client(), "rescuer", RECLAIM_IDLE_S)
    rescuer.drain_own = False
    taken = rescuer.take(10)
    assert taken is not None and taken.entry_id == held.entry_id

    publisher.delta("a stale answer")
    publisher.flush()
    assert publisher.is_superseded and lost == [True]
    publisher.progress(2, 2, "stale progress")
    assert not publisher.final("a stale answer")  # the terminal event is fenced too: no second answer
    assert [e.type for e in replies(redis_client)] == [ReplyType.PROGRESS]
    assert redis_client.xpending(keys.JOBS_STREAM, keys.WORKER_GROUP)["pending"] == 1  # not acknowledged

    rescued = ReplyPublisher(rescuer, taken, job(1))
    assert rescued.final("the answer")
    assert [(e.type, e.text) for e in replies(redis_client)][-1] == (ReplyType.FINAL, "the answer")
    assert redis_client.get(keys.QUEUE_DEPTH_KEY) == b"0"


def test_after_a_takeover_the_stalled_workers_text_stops(redis_server, redis_client) -> None:
    spec = ModelSpec(name="echo", backend="echo", weights="delay_s=0.05")
    config = WorkerSettings(default_model="echo", worker_id="w",
                          reclaim_idle_s=RECLAIM_IDLE_S)
    stalled = Worker(redis_server.client(), NoEmbedder(), {"echo": EchoGenerator(spec)},  # type: ignore[arg-type]
                     ModelRegistry({"echo": spec}), config, ingest_limits=IngestLimits(1, 1, 10, 0))
    stalled.ensure_group()
    words = " ".join(f"w{n}" for n in range(400))  # 400 x 50 ms: far longer than this test
    redis_client.xadd(keys.JOBS_STREAM, {"job": job(1, text=words).to_json()})
    running = threading.Thread(target=stalled.run, kwargs={"burst": True}, daemon=True)
    running.start()
    deadline = time.monotonic() + WAIT_S
    while not any(e.type is ReplyType.DELTA for e in replies(redis_client)):
        assert time.monotonic() < deadline, "the worker never streamed"
        time.sleep(0.02)

    other = JobQueue(redis_server.client(), "other", RECLAIM_IDLE_S)
    other.drain_own = False
    entry_id = owners(redis_client).popitem()[0]
    taken = None
    while taken is None:  # the stalled worker's lease may renew in between: make it look dead again
        assert time.monotonic() < deadline, "the job was never taken over"
        looks_dead(redis_client, entry_id, "w")  # as if the stalled one had hung for the idle time
        taken = other.take(10)
    after_takeover = redis_client.xrevrange(keys.reply_stream("qa"), count=1)[0][0]
    running.join(timeout=WAIT_S)
    assert not running.is_alive(), "the stalled worker did not stop after losing its job"
    late = [ReplyEvent.from_json(f[b"event"]) for _, f in
            redis_client.xrange(keys.reply_stream("qa"), min=after_takeover)][1:]  # type: ignore[union-attr]
    assert late == [], "the stalled worker kept posting after the takeover"
    streamed = "".join(e.text for e in replies(redis_client))
    assert 0 < len(streamed.split()) < 400
    assert other.finish(taken, "u", keys.reply_stream("qa"), "")


def test_heartbeats_are_read_without_scanning_the_keyspace(redis_client) -> None:
    from jobs.heartbeats import WorkerInfo, announce, live_models, live_workers, withdraw

    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(5000):
            pipe.set(f"phobos:doc:unrelated:{n}", "x")
        pipe.execute()
    announce(redis_client, WorkerInfo("old", "h", 1, ["a"], 1.0), ttl_s=30)
    announce(redis_client, WorkerInfo("new", "h", 2, ["b"], 2.0, state="loading"), ttl_s=30)
    announce(redis_client, WorkerInfo("gone", "h", 3, ["c"], 0.5), ttl_s=30)
    redis_client.zadd(keys.WORKERS_LIVE_KEY, {"gone": 1})  # its heartbeat expired long ago
    redis_client.config_resetstat()

    assert [w.worker_id for w in live_workers(redis_client)] == ["old", "new"]
    assert live_models(redis_client) == {"a"}  # a loading worker serves nothing yet
    commands = redis_client.info("commandstats")
    assert not any(name.startswith("cmdstat_scan") or name == "cmdstat_keys" for name in commands)
    assert not redis_client.hexists(keys.WORKERS_INFO_KEY, "gone")  # a reader drops expired heartbeats
    withdraw(redis_client, "old")
    assert [w.worker_id for w in live_workers(redis_client)] == ["new"]
