"""Limits count per sender within a workspace: ``platform:workspace:user``, or the channel without a user."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from bot.slack.payloads import sender_of
from core.backends.echo import EchoGenerator
from core.ingest import IngestLimits
from core.registry import ModelRegistry, ModelSpec
from core.scope import Scope
from jobs import keys
from jobs.admission import Admission, AdmissionLimits
from jobs.client import JobClient
from jobs.protocol import Job, JobKind
from workers.worker import Worker, WorkerConfig

ONE_AT_A_TIME = AdmissionLimits(rate_burst=1, rate_per_min=0.001)  # one question, then none for hours


def ask(n: int, workspace: str, user: str, channel: str = "C1") -> Job:
    return Job(id=f"slack:{n}", kind=JobKind.ASK, scope=Scope("slack", workspace, channel), user=user,
               reply_to=keys.reply_stream("limits"), text=f"question {n}")


def submit_all(url: str, jobs: list[Job], limits: AdmissionLimits) -> list[Admission]:
    async def run() -> list[Admission]:
        client = aioredis.Redis.from_url(url)
        adapter = JobClient(client, "limits", limits=limits)
        results = [(await adapter.submit(j)).status for j in jobs]
        await client.aclose()
        return results

    return asyncio.run(run())


def test_the_same_user_id_in_two_workspaces_has_two_buckets(redis_server, redis_client) -> None:
    statuses = submit_all(redis_server.url, [ask(1, "T1", "U123"), ask(2, "T2", "U123"), ask(3, "T1", "U123")],
                          ONE_AT_A_TIME)
    assert statuses == [Admission.QUEUED, Admission.QUEUED, Admission.RATE_LIMITED]
    assert redis_client.exists(keys.RATE_PREFIX + "slack:T1:U123", keys.RATE_PREFIX + "slack:T2:U123") == 2


def test_events_without_a_user_do_not_share_one_bucket(redis_server, redis_client) -> None:
    statuses = submit_all(redis_server.url, [ask(1, "T1", "", "C1"), ask(2, "T1", "", "C2"), ask(3, "T2", "", "C1"),
                                             ask(4, "T1", "", "C1")], ONE_AT_A_TIME)
    assert statuses == [Admission.QUEUED] * 3 + [Admission.RATE_LIMITED]  # only the channel's own bucket is spent
    assert redis_client.exists(keys.RATE_PREFIX + "slack:T1:channel:C1") == 1


def test_a_slack_event_from_a_bot_or_app_counts_against_it() -> None:
    assert sender_of({"user": "U1", "bot_id": "B1"}) == "U1"
    assert sender_of({"bot_id": "B1", "subtype": "bot_message"}) == "B1"
    assert sender_of({"app_id": "A1"}) == "A1"
    assert sender_of({}) == ""


def test_the_worker_releases_the_per_sender_count_it_was_admitted_under(redis_server, redis_client) -> None:
    per_user = AdmissionLimits(max_queued_per_user=1)
    statuses = submit_all(redis_server.url, [ask(1, "T1", "U123"), ask(2, "T2", "U123"), ask(3, "T1", "U123")],
                          per_user)
    assert statuses == [Admission.QUEUED, Admission.QUEUED, Admission.USER_QUEUE_FULL]
    spec = ModelSpec(name="echo", backend="echo")
    config = WorkerConfig(default_model="echo", ingest_limits=IngestLimits(1, 1, 10, 0), worker_id="w")
    worker = Worker(redis_client, NoEmbedder(), {"echo": EchoGenerator(spec)},  # type: ignore[arg-type]
                    ModelRegistry({"echo": spec}), config)
    worker.run(burst=True)
    assert worker.jobs_done == 2
    for sender in ("slack:T1:U123", "slack:T2:U123"):
        assert int(redis_client.get(keys.USER_QUEUED_PREFIX + sender) or 0) == 0
    assert submit_all(redis_server.url, [ask(4, "T1", "U123")], per_user) == [Admission.QUEUED]


class NoEmbedder:
    name, dim, max_tokens = "none", 4, 10

