"""A Slack DM question reads every channel its asker is a member of now, and none other: the real
slack-bolt adapter against the fake Slack (users.conversations included), a real Redis and a real
``phobos worker`` serving the extractive model.

Each document holds one fact; each probe asks for one document's fact from the DM. A document the
asker may read is cited with its channel's name; one they may not is never named in an answer, and
its scope is never in the job the adapter submitted.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, cast

import pytest

from jobs import keys
from jobs.protocol import Job, ReplyEvent, ReplyType
from tests.conftest import RedisServer, WorkerProcess
from tests.fakes.fake_slack import BOT_USER_ID, TEAM_ID, Channel
from tests.pdfs import pdf_with_pages
from tests.test_slack_adapter import USER, WORKER_ENV, Harness, event_callback, harness, slack_file

pytestmark = pytest.mark.slack

OTHER_TEAM = "T0OTHER"
COLLEAGUE = "U0COLLEAGUE"
# document -> (its one fact, a question only that fact answers)
FACTS = {
    "report.pdf": ("The Skerry Point lighthouse lens was made in 1872 in Birmingham.",
                   "When was the Skerry Point lighthouse lens made?"),
    "thread-notes.pdf": ("The apiary queens are marked with a blue dot of paint.",
                         "How are the apiary queens marked?"),
    "secret.pdf": ("Mount Kessler last erupted in 1931 and its crater lake is turquoise.",
                   "When did Mount Kessler last erupt?"),
    "general.pdf": ("The night train to Hallstatt leaves platform nine at 23:40.",
                    "When does the night train to Hallstatt leave?"),
    "nobot.pdf": ("The cider press in the old barn was rebuilt in 1998.",
                  "When was the cider press in the old barn rebuilt?"),
    "other-team.pdf": ("The ferry to Inishmore departs at seven from the harbour of Nuala.",
                       "When does the ferry to Inishmore depart?"),
}


@pytest.fixture(scope="module")
def redis_url(redis_server: RedisServer) -> str:
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    client = redis_server.client()
    process = WorkerProcess(redis_url, "extractive", tmp_path_factory.mktemp("worker") / "worker.log", **WORKER_ENV)
    try:
        process.wait_ready(client)
        yield
    finally:
        process.stop()
        client.close()


async def share(h: Harness, channel: str, name: str, ts: str, thread_ts: str | None = None,
                team: str = TEAM_ID) -> None:
    """``name`` is shared in ``channel`` (of ``team``) and indexed there."""
    file_id = f"F{abs(hash((channel, name, team))) % 10**8:08d}"
    h.fake.files[f"{file_id}/{name}"] = pdf_with_pages([FACTS[name][0]])
    event = dict(h.file_share(ts, slack_file(h.fake, file_id, name), thread_ts), channel=channel, team=team)
    body = event_callback(event)
    body["team_id"] = team
    status, _ = await h.post_signed(json.dumps(body))
    assert status == 200
    await h.fake.wait_for(lambda: any("Indexed" in t for t in h.fake.messages(channel).values()))


async def ask_in_dm(h: Harness, question: str, ts: str, thread_ts: str = "") -> tuple[str, Job]:
    """Ask from the DM (in a thread of it with ``thread_ts``: the assistant pane's shape); the final answer
    as the DM shows it, and the job the adapter submitted for it."""
    before = set(h.fake.messages(h.dm))
    dm = {"type": "message", "user": USER, "text": question, "ts": ts, "channel": h.dm, "channel_type": "im",
          "team": TEAM_ID, **({"thread_ts": thread_ts} if thread_ts else {})}
    await h.send_event(dm)
    job_id = f"slack:{TEAM_ID}:{h.dm}:{ts}"
    final: list[ReplyEvent] = []

    async def final_event() -> None:
        while not final:
            entries = await h.redis.xrange(h.adapter.job_client.reply_stream)
            events = [ReplyEvent.from_json(f[b"event"]) for _id, f in entries if b"event" in f]
            final.extend(e for e in events if e.job_id == job_id and e.type is ReplyType.FINAL)
            await asyncio.sleep(0.05)  # polling the stream, as an adapter's reader would

    await asyncio.wait_for(final_event(), timeout=60)
    ending = final[0].text.strip()[-20:]

    def shown() -> str | None:
        fresh = [t for key, t in h.fake.messages(h.dm).items() if key not in before]
        return next((t for t in fresh if ending in t and (not final[0].citations or "Sources:" in t)), None)

    await h.fake.wait_for(lambda: shown() is not None)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await h.redis.xrange(keys.JOBS_STREAM))
    job = next(j for j in (Job.from_json(f[b"job"]) for _id, f in entries) if j.id == job_id)
    return cast(str, shown()), job


def test_a_dm_reads_the_askers_channels_and_no_other(redis_url: str, worker: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> dict[str, Any]:
        async with harness(redis_url) as h:
            fin, secret, general, nobot = (f"{h.channel}FIN", f"{h.channel}SEC", f"{h.channel}GEN",
                                           f"{h.channel}NOB")
            fake = h.fake
            fake.channels[fin] = Channel("finance", False, {BOT_USER_ID, USER})
            fake.channels[secret] = Channel("secret", True, {BOT_USER_ID, COLLEAGUE})
            fake.channels[general] = Channel("general", False, {BOT_USER_ID, COLLEAGUE})
            fake.channels[nobot] = Channel("nobot", False, {BOT_USER_ID, USER})
            await share(h, fin, "report.pdf", "1700000100.000100")
            await share(h, fin, "thread-notes.pdf", "1700000100.000300", thread_ts="1700000100.000200")
            await share(h, secret, "secret.pdf", "1700000100.000400")
            await share(h, general, "general.pdf", "1700000100.000500")
            await share(h, nobot, "nobot.pdf", "1700000100.000600")
            fake.channels[nobot].members.discard(BOT_USER_ID)  # the bot was removed after the file was indexed
            await h.send_event({"type": "channel_left", "channel": nobot})
            # The same channel id in another workspace, where the asker's id means someone else.
            await share(h, fin, "other-team.pdf", "1700000100.000700", team=OTHER_TEAM)

            granted = {f"slack:{TEAM_ID}:{fin}", f"slack:{TEAM_ID}:{fin}:1700000100.000200"}
            probes: dict[str, Any] = {}
            for n, (name, (_fact, question)) in enumerate(FACTS.items()):
                text, job = await ask_in_dm(h, question, f"1700000200.{n:06d}")
                probes[name] = text
                assert set(job.reads) == granted, job.reads
                assert job.channel_names == {f"slack:{TEAM_ID}:{fin}": "finance"}
            assert "[1] #finance · report.pdf, p. 1" in probes["report.pdf"]
            assert "1872" in probes["report.pdf"]
            assert "[1] #finance · thread-notes.pdf, p. 1" in probes["thread-notes.pdf"]
            for hidden in ("secret.pdf", "general.pdf", "nobot.pdf", "other-team.pdf"):
                assert all(hidden not in text for text in probes.values()), hidden
            assert "1931" not in probes["secret.pdf"] and "23:40" not in probes["general.pdf"]
            assert "1998" not in probes["nobot.pdf"] and "Inishmore" not in probes["other-team.pdf"]

            # The assistant pane lives in a thread of the DM: the same reads, its own conversation.
            text, job = await ask_in_dm(h, FACTS["report.pdf"][1], "1700000250.000200", "1700000250.000100")
            assert set(job.reads) == granted and job.scope.thread == "1700000250.000100"
            assert "[1] #finance · report.pdf, p. 1" in text
            probes["report.pdf from the assistant pane (a thread of the DM)"] = text

            # /phobos docs in the DM lists what a DM question reads, by channel.
            form = {"token": "x", "team_id": TEAM_ID, "channel_id": h.dm, "channel_name": "directmessage",
                    "user_id": USER, "command": "/phobos", "text": "docs", "response_url": fake.response_url(),
                    "trigger_id": f"trig.{time.monotonic_ns()}"}
            await h.post_signed(urllib.parse.urlencode(form), "application/x-www-form-urlencoded")
            await fake.wait_for(lambda: any("#finance" in r.get("text", "") for r in fake.responses))
            listing = next(r["text"] for r in fake.responses if "#finance" in r.get("text", ""))
            assert "report.pdf" in listing and "thread-notes.pdf" in listing and "secret.pdf" not in listing
            probes["/phobos docs"] = listing

            # Removed from #finance: the next question no longer reads it.
            fake.channels[fin].members.discard(USER)
            await h.send_event({"type": "member_left_channel", "user": USER, "channel": fin,
                                "channel_type": "C", "team": TEAM_ID})
            text, job = await ask_in_dm(h, FACTS["report.pdf"][1], "1700000300.000100")
            assert job.reads == [] and "report.pdf" not in text and "1872" not in text
            probes["report.pdf after leaving #finance"] = text
            return probes

    probes = asyncio.run(scenario())
    with capsys.disabled():  # the transcript for the closing note
        for name, text in probes.items():
            print(f"\n--- DM probe: {name}\n{text}")
