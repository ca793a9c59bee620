"""The Slack adapter: the real slack-bolt app, driven by signed HTTP requests and Socket Mode envelopes,
against a local fake Slack (tests/fakes/fake_slack.py), a real Redis and a real `phobos worker` process
serving the fast, deterministic "extractive" model.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

import bot.slack.adapter as slack_adapter_module
from bot.reply import STREAMING_CURSOR
from bot.slack.adapter import SlackAdapter
from bot.slack.permalinks import PermalinkStore
from bot.slack.replies import VIA_CHAT, Route, SlackReply
from bot.slack.settings import SlackSettings
from bot.slack.slash_command import SLASH_COMMAND
from bot.slack.web_client import web_client
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import Job, ReplyEvent, ReplyType
from tests.conftest import RedisServer, WorkerProcess
from tests.fakes.fake_slack import BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack, SlackLimits
from tests.pdfs import FACT_PAGES, pdf_with_pages

pytestmark = pytest.mark.slack

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
CHANNEL = "C0CHAN"
_harness_numbers = itertools.count(1)  # each harness talks in channels and DMs of its own
USER = "U0USER"
CLOSE_DEADLINE_S = 60.0  # a stuck shutdown fails the test instead of hanging the run
NO_DOCUMENTS = "No documents are shared"  # the worker's answer in a scope without PDFs
# Small chunks and one passage per answer, so each fact cites exactly its page.
WORKER_ENV = {"PHOBOS_DEFAULT_MODEL": "extractive", "PHOBOS_CHUNK_TOKENS": "60", "PHOBOS_TOP_K": "1"}


@pytest.fixture(scope="module")
def redis_url(redis_server: RedisServer) -> str:
    """The test Redis, flushed once for this module; each test works in channels of its own."""
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, redis_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One real `phobos worker` serving the extractive model for the module (it takes seconds to start)."""
    client = redis_server.client()
    process = WorkerProcess(redis_url, "extractive", tmp_path_factory.mktemp("worker") / "worker.log",
                            **WORKER_ENV)
    try:
        process.wait_ready(client)
        yield
    finally:
        process.stop()
        client.close()


@dataclass
class Harness:
    fake: FakeSlack
    adapter: SlackAdapter
    redis: aioredis.Redis
    http: aiohttp.ClientSession
    channel: str  # a channel of this test's own, so tests can share one worker and Redis
    dm: str  # the user's DM with the bot

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.http_port}/slack/events"

    async def post_signed(self, body: str, content_type: str = "application/json", *,
                          secret: str = SIGNING_SECRET, timestamp: int | None = None,
                          retry_num: int | None = None) -> tuple[int, str]:
        """POST ``body`` to the adapter's Events API endpoint, signed the way Slack signs it."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts,
                   "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
                   or ""}
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        async with self.http.post(self.events_url, data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text()

    async def send_event(self, event: dict[str, Any], *, event_id: str = "", retry_num: int | None = None
                         ) -> tuple[int, str]:
        return await self.post_signed(json.dumps(event_callback(event, event_id)), retry_num=retry_num)

    async def slash(self, text: str, response_url: str, trigger_id: str = "") -> tuple[int, str]:
        form = {"token": "x", "team_id": TEAM_ID, "channel_id": self.channel, "user_id": USER,
                "command": "/phobos", "text": text, "response_url": response_url,
                "trigger_id": trigger_id or f"trig.{time.monotonic_ns()}"}
        return await self.post_signed(urllib.parse.urlencode(form), "application/x-www-form-urlencoded")

    async def jobs_submitted(self) -> int:
        """How many jobs this test's conversations put on the stream."""
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await self.redis.xrange(keys.JOBS_STREAM))
        jobs = [Job.from_json(fields[b"job"]) for _id, fields in entries]
        return sum(job.scope.channel in (self.channel, self.dm) for job in jobs)

    def mention(self, text: str, ts: str, thread_ts: str | None = None) -> dict[str, Any]:
        event = {"type": "app_mention", "user": USER, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
                 "channel": self.channel, "event_ts": ts, "team": TEAM_ID}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def file_share(self, ts: str, file: dict[str, Any], thread_ts: str | None = None) -> dict[str, Any]:
        event = {"type": "message", "subtype": "file_share", "user": USER, "text": "", "ts": ts,
                 "channel": self.channel, "channel_type": "channel", "files": [file], "team": TEAM_ID}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def thread_messages(self, thread_ts: str) -> list[str]:
        """Current texts of the app's messages in one thread of the channel, in posting order."""
        return thread_messages(self.fake, self.channel, thread_ts)

    def shows(self, thread_ts: str, needle: str) -> bool:
        return any(needle in text for text in self.thread_messages(thread_ts))


def event_callback(event: dict[str, Any], event_id: str = "") -> dict[str, Any]:
    return {"token": "x", "team_id": TEAM_ID, "api_app_id": "A0APP", "type": "event_callback",
            "event": event, "event_id": event_id or f"Ev{time.monotonic_ns()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}]}


def slack_file(fake: FakeSlack, file_id: str, name: str, url: str | None = None,
               size: int = 0) -> dict[str, Any]:
    return {"id": file_id, "name": name, "filetype": "pdf", "mimetype": "application/pdf",
            "size": size or len(fake.files.get(f"{file_id}/{name}", b"")),
            "url_private": url or fake.file_url(f"{file_id}/{name}"),
            "permalink": f"https://test.slack.com/files/{USER}/{file_id}/{name}"}


def adapter_settings(fake: FakeSlack, mode: str = "http", **overrides: Any) -> SlackSettings:
    """The adapter's settings for a test against ``fake``: local hosts, fast updates."""
    return SlackSettings(**{"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "app_token": "xapp-test",
                            "mode": mode, "http_host": "127.0.0.1", "http_port": 0, "api_url": fake.url,
                            "file_hosts": ("127.0.0.1",), "file_url_schemes": ("http",),
                            "update_interval_s": 0.2, **overrides})


@contextlib.asynccontextmanager
async def harness(redis_url: str, mode: str = "http", limits: SlackLimits | None = None,
                  **overrides: Any) -> AsyncIterator[Harness]:
    fake = FakeSlack(limits=limits or SlackLimits())
    await fake.start()
    redis = aioredis.from_url(redis_url)
    settings = adapter_settings(fake, mode, **overrides)
    number = next(_harness_numbers)
    adapter = SlackAdapter(settings, JobClient(redis, f"slack-test-{number}"))
    await adapter.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Harness(fake, adapter, redis, http, channel=f"C{number:04d}", dm=f"D{number:04d}")
    finally:
        try:
            async with asyncio.timeout(CLOSE_DEADLINE_S):
                stuck = await adapter.close()
            assert stuck == 0, f"{stuck} adapter task(s) ignored their cancel at shutdown"
        except TimeoutError:
            pytest.fail(f"the Slack adapter did not close within {CLOSE_DEADLINE_S:.0f} s")
        finally:
            await redis.aclose()
            await fake.close()


def thread_messages(fake: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    """Current texts of the app's messages in one thread (posted or streamed), in posting order."""
    posted = fake.thread_posts(channel, thread_ts)
    shown = fake.messages(channel)
    return [shown[ts] for ts in posted if ts in shown]


async def share_pdf(h: Harness, ts: str, name: str = "reactor.pdf", file_id: str = "F0PDF",
                    thread_ts: str | None = None) -> None:
    h.fake.files[f"{file_id}/{name}"] = pdf_with_pages(FACT_PAGES)
    status, _ = await h.send_event(h.file_share(ts, slack_file(h.fake, file_id, name), thread_ts))
    assert status == 200
    # The status message under the file ends with the worker's summary.
    await h.fake.wait_for(lambda: h.shows(thread_ts or ts, "Indexed"))


# ---- tests


def test_pdf_upload_then_mention_streams_an_answer_citing_it_in_the_thread(redis_url: str,
                                                                           worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            await share_pdf(h, ts="1700000000.000100", name="facts.pdf")
            download = h.fake.downloads[0]
            assert download.authorization == f"Bearer {BOT_TOKEN}"

            ask_ts = "1700000000.000200"
            status, _ = await h.send_event(h.mention("When does the night train to Hallstatt leave?", ask_ts))
            assert status == 200
            await h.fake.wait_for(lambda: any("Sources:" in t for t in h.thread_messages(ask_ts)))

            [started] = h.fake.api("chat.startStream", thread_ts=ask_ts)  # streamed natively, once
            assert not h.fake.api("chat.postMessage", thread_ts=ask_ts)
            assert started.args["recipient_user_id"] == USER and started.args["recipient_team_id"] == TEAM_ID
            [stopped] = h.fake.api("chat.stopStream", ts=started.args["ts"])
            assert [b["type"] for b in stopped.args["blocks"]] == ["section", "context_actions"]
            final = h.thread_messages(ask_ts)[0]
            assert "platform nine" in final
            assert "[1] facts.pdf, p. 4 <https://test.slack.com/files/U0USER/F0PDF/facts.pdf>" in final
            assert all(c.token == BOT_TOKEN for c in h.fake.calls)
            # The top-level mention's conversation is the thread its answer opened; the PDF stays the channel's.
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await h.redis.xrange(keys.JOBS_STREAM))
            jobs = {job.kind: job for job in (Job.from_json(f[b"job"]) for _id, f in entries)
                    if job.scope.channel == h.channel}
            assert jobs["ask"].scope.thread == ask_ts and jobs["ingest"].scope.thread is None

    asyncio.run(scenario())


def test_a_question_sent_with_its_pdf_waits_for_the_pdf_to_be_indexed(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            ts = "1700000013.000100"
            h.fake.files["F0BOTH/both.pdf"] = pdf_with_pages(FACT_PAGES)
            event = h.mention("When does the night train to Hallstatt leave?", ts)
            event["files"] = [slack_file(h.fake, "F0BOTH", "both.pdf")]
            await h.send_event(event)
            await h.fake.wait_for(lambda: any("Sources:" in t for t in h.thread_messages(ts)))
            answer = next(t for t in h.thread_messages(ts) if "Sources:" in t)
            assert "platform nine" in answer and "both.pdf, p. 4" in answer

    asyncio.run(scenario())


def test_mention_in_a_thread_asks_in_that_thread(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            thread = "1700000001.000100"
            await share_pdf(h, ts="1700000001.000150", thread_ts=thread)  # belongs to the thread only
            question = h.mention("When was the lighthouse lens made?", "1700000001.000200", thread_ts=thread)
            await h.send_event(question)
            await h.fake.wait_for(lambda: sum("Sources:" in t for t in h.thread_messages(thread)) == 1)
            # A top-level question in the channel does not see the thread's document.
            top = "1700000001.000300"
            await h.send_event(h.mention("When was the lighthouse lens made?", top))
            await h.fake.wait_for(lambda: h.shows(top, NO_DOCUMENTS))

    asyncio.run(scenario())


def test_retried_event_makes_one_job_and_one_answer(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            event = h.mention("anything there?", "1700000002.000100")
            first, _ = await h.send_event(event, event_id="Ev0RETRY")
            retry, _ = await h.send_event(event, event_id="Ev0RETRY", retry_num=1)
            assert (first, retry) == (200, 200)
            await h.fake.wait_for(lambda: h.shows("1700000002.000100", NO_DOCUMENTS))
            await asyncio.sleep(0.5)  # time for a second answer to show up, if there were one
            assert await h.jobs_submitted() == 1
            assert len(h.fake.thread_posts(h.channel, "1700000002.000100")) == 1

    asyncio.run(scenario())


def test_bad_signature_and_stale_timestamp_are_rejected(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            body = json.dumps(event_callback(h.mention("hi", "1700000003.000100")))
            forged, _ = await h.post_signed(body, secret="not-the-secret")
            stale, _ = await h.post_signed(body, timestamp=int(time.time()) - 10 * 60)
            assert (forged, stale) == (401, 401)
            await asyncio.sleep(0.3)
            assert await h.jobs_submitted() == 0
            assert not h.fake.api("chat.postMessage")

    asyncio.run(scenario())


def test_file_url_off_slack_hosts_never_receives_the_token(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            pdf = pdf_with_pages(FACT_PAGES)
            h.fake.files["F0OFF/off.pdf"] = pdf
            # 1. The event points straight at another host: nothing is fetched.
            off_url = h.fake.file_url("F0OFF/off.pdf", "localhost")
            off_host = slack_file(h.fake, "F0OFF", "off.pdf", off_url)
            await h.send_event(h.file_share("1700000004.000100", off_host))
            await h.fake.wait_for(lambda: h.shows("1700000004.000100", "not hosted on Slack"))
            assert h.fake.downloads == []
            # 2. A Slack URL redirects to another host: the hop there goes without the token.
            h.fake.files["F0RED/elsewhere.pdf"] = pdf
            h.fake.redirects["F0RED/red.pdf"] = h.fake.file_url("F0RED/elsewhere.pdf", "localhost")
            redirected = slack_file(h.fake, "F0RED", "red.pdf", size=len(pdf))
            await h.send_event(h.file_share("1700000004.000200", redirected))
            await h.fake.wait_for(lambda: len(h.fake.downloads) == 2)
            on_slack, off_slack = h.fake.downloads
            assert on_slack.host.startswith("127.0.0.1") and on_slack.authorization == f"Bearer {BOT_TOKEN}"
            assert off_slack.host.startswith("localhost") and off_slack.authorization is None
            # Without the token, the file host serves a sign-in page (200, text/html): said so, not indexed.
            await h.fake.wait_for(lambda: h.shows("1700000004.000200", "files:read"))
            assert await h.jobs_submitted() == 0

    asyncio.run(scenario())


def test_file_over_the_size_limit_is_refused_without_download(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url, max_file_mb=0.001) as h:
            h.fake.files["F0BIG/big.pdf"] = pdf_with_pages(FACT_PAGES)
            big = slack_file(h.fake, "F0BIG", "big.pdf", size=10**6)
            await h.send_event(h.file_share("1700000005.000100", big))
            await h.fake.wait_for(lambda: h.shows("1700000005.000100", "larger than"))
            assert h.fake.downloads == []
            assert await h.jobs_submitted() == 0

    asyncio.run(scenario())


def test_slash_model_switches_the_channel_model(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            good, bad = h.fake.response_url(), h.fake.response_url()
            for text, url in (("model extractive", good), ("model no-such-model", bad)):
                status, _ = await h.slash(text, url)
                assert status == 200  # acked at once; the result comes through response_url
            await h.fake.wait_for(lambda: len(h.fake.responses) == 2)
            by_url = {r["response_url_id"]: r for r in h.fake.responses}
            switched, refused = by_url[good.rsplit("/", 1)[1]], by_url[bad.rsplit("/", 1)[1]]
            assert "extractive" in switched["text"] and switched["response_type"] == "in_channel"
            assert "no-such-model" in refused["text"] and refused["text"].startswith(":warning:")

    asyncio.run(scenario())


def test_slash_docs_forget_status_models_reset_answer_through_response_url(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            await share_pdf(h, ts="1700000012.000100", name="facts.pdf")
            urls = {command: h.fake.response_url() for command in ("docs", "status", "models", "reset")}
            for command, url in urls.items():
                await h.slash(command, url)
            await h.fake.wait_for(lambda: len(h.fake.responses) == 4)
            forget_url = h.fake.response_url()
            await h.slash("forget facts.pdf", forget_url)  # after docs has answered, so docs still lists it
            await h.fake.wait_for(lambda: len(h.fake.responses) == 5)
            by_command = {command: next(r for r in h.fake.responses if url.endswith(r["response_url_id"]))
                          for command, url in {**urls, "forget": forget_url}.items()}
            assert "facts.pdf (4 pages" in by_command["docs"]["text"]
            assert "worker(s) live" in by_command["status"]["text"]
            assert "extractive" in by_command["models"]["text"]
            assert "Forgot facts.pdf" in by_command["forget"]["text"]
            assert "no earlier questions to forget" in by_command["reset"]["text"]
            # What changes the channel is shown to the channel; lookups only to the one who asked.
            assert {c: r["response_type"] for c, r in by_command.items()} == {
                "docs": "ephemeral", "status": "ephemeral", "models": "ephemeral", "forget": "in_channel",
                "reset": "in_channel"}
            assert h.fake.refused_responses == 0, "each response_url within its 5 uses"

    asyncio.run(scenario())


def test_slash_ask_answers_in_the_channel_or_privately_where_the_bot_is_not_a_member(redis_url: str,
                                                                                    worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            await h.slash("ask When does the night train leave?", h.fake.response_url())
            await h.fake.wait_for(lambda: any(NO_DOCUMENTS in t for t in h.fake.messages(h.channel).values()))
            [answer] = h.fake.messages(h.channel).values()
            assert answer.startswith(f"<@{USER}> asked: _When does the night train leave?_")
            # Not invited: the answer goes to the asker through the command's response_url instead.
            h.fake.not_member_of.add(h.channel)
            await h.slash("what about the bees?", h.fake.response_url())  # no subcommand: a question
            await h.fake.wait_for(lambda: len(h.fake.responses) == 1)
            assert NO_DOCUMENTS in h.fake.responses[0]["text"]
            assert "what about the bees?" in h.fake.responses[0]["text"]

    asyncio.run(scenario())


def test_url_verification_challenge_is_answered(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            body = json.dumps({"token": "x", "type": "url_verification", "challenge": "c-123"})
            status, text = await h.post_signed(body)
            assert status == 200 and "c-123" in text

    asyncio.run(scenario())


def test_slash_without_subcommand_shows_usage_and_submits_nothing(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            status, text = await h.slash("", h.fake.response_url())
            assert status == 200 and "/phobos ask QUESTION" in text  # the usage is the ack itself
            assert await h.jobs_submitted() == 0

    asyncio.run(scenario())


def test_own_messages_and_edits_are_ignored(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            own = {"type": "message", "subtype": "bot_message", "bot_id": BOT_ID, "text": "an answer",
                   "ts": "1700000006.000100", "channel": h.dm, "channel_type": "im"}
            edit = {"type": "message", "subtype": "message_changed", "channel": h.dm, "channel_type": "im",
                    "ts": "1700000006.000200", "message": {"bot_id": BOT_ID, "text": "an answer, longer",
                                                           "ts": "1700000006.000100"}}
            for event in (own, edit):
                assert (await h.send_event(event))[0] == 200
            await asyncio.sleep(0.5)
            assert await h.jobs_submitted() == 0
            assert not h.fake.api("chat.postMessage")

    asyncio.run(scenario())


def test_direct_message_is_a_question_answered_in_the_dm(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            dm = {"type": "message", "user": USER, "text": "hello, what do you know?",
                  "ts": "1700000007.000100", "channel": h.dm, "channel_type": "im", "team": TEAM_ID}
            await h.send_event(dm)
            await h.fake.wait_for(lambda: any(NO_DOCUMENTS in t for t in h.fake.messages(h.dm).values()))
            post = h.fake.api("chat.postMessage", channel=h.dm)[0]
            assert post.args.get("thread_ts") is None  # a DM is answered in the DM itself

    asyncio.run(scenario())


def test_socket_mode_mention_is_acknowledged_and_answered(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url, mode="socket") as h:
            ts = "1700000008.000100"
            envelope_id = await h.fake.send_envelope("events_api", event_callback(h.mention("anything?", ts)))
            await h.fake.wait_for(lambda: envelope_id in h.fake.socket_acks)
            await h.fake.wait_for(lambda: h.shows(ts, NO_DOCUMENTS))

    asyncio.run(scenario())


def test_long_answer_is_split_at_slack_limit_without_breaking_code_blocks(redis_url: str) -> None:
    async def scenario() -> None:
        fake = FakeSlack(limits=SlackLimits(text_chars=1000, post_burst=20))  # refuses longer text
        await fake.start()
        redis = aioredis.from_url(redis_url)
        try:
            client = web_client(SlackSettings(bot_token=BOT_TOKEN, app_token="xapp-test", api_url=fake.url))
            route = Route(VIA_CHAT, CHANNEL, f"slack:{TEAM_ID}:{CHANNEL}", thread_ts="1700000009.000100")
            lines = "\n".join(f"x_{i} = {i}  # a line of generated code" for i in range(200))
            code = "```python\n" + lines + "\n```"
            answer = "Here is the code:\n\n" + code + "\n\nThat is all."
            async with aiohttp.ClientSession() as http:
                reply = SlackReply(route, client, http, PermalinkStore(redis), limit=1000,
                                   update_interval_s=0)
                await reply.feed(ReplyEvent("j1", ReplyType.DELTA, seq=1, text=answer[:500]))
                await reply.feed(ReplyEvent("j1", ReplyType.FINAL, seq=2, text=answer))
            pieces = thread_messages(fake, CHANNEL, "1700000009.000100")
            assert len(pieces) > 1 and all(len(p) <= 1000 for p in pieces)
            assert all(p.count("```") % 2 == 0 for p in pieces), "every piece renders its code on its own"
            assert pieces[0].startswith("Here is the code:") and pieces[-1].endswith("That is all.")
            assert not [c for c in fake.refused if c.method.startswith("chat.")], "split, never refused"
        finally:
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())


def test_manifest_subscribes_to_what_the_adapter_handles() -> None:
    manifest = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "slack-manifest.yml").read_text())
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mention", "message.channels", "message.groups", "message.im", "assistant_thread_started",
            "assistant_thread_context_changed"} <= events
    assert {"app_mentions:read", "chat:write", "commands", "files:read", "im:history", "assistant:write",
            "channels:read"} <= scopes
    assert "assistant_view" in manifest["features"]  # the AI app pane
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == [SLASH_COMMAND]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True  # the 👍/👎 buttons


def test_streamed_text_is_posted_once_then_edited_at_most_once_per_interval(redis_url: str) -> None:
    async def scenario() -> None:
        fake = FakeSlack()
        await fake.start()
        redis = aioredis.from_url(redis_url)
        try:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
            route = Route(VIA_CHAT, CHANNEL, f"slack:{TEAM_ID}:{CHANNEL}", thread_ts="1700000010.000100")
            async with aiohttp.ClientSession() as http:
                reply = SlackReply(route, client, http, PermalinkStore(redis), update_interval_s=60)
                for seq in range(1, 21):  # twenty deltas well inside one interval
                    await reply.feed(ReplyEvent("j2", ReplyType.DELTA, seq=seq, text=f"word{seq} "))
                assert (len(fake.api("chat.postMessage")), len(fake.api("chat.update"))) == (1, 0)
                await reply.flush()  # the router's timer: show what arrived since
                await reply.feed(ReplyEvent("j2", ReplyType.FINAL, seq=21, text="the whole answer"))
            assert len(fake.api("chat.postMessage")) == 1
            assert [c.args["text"] for c in fake.api("chat.update")][-1] == "the whole answer"
            assert len(fake.api("chat.update")) == 2
        finally:
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())


def test_a_job_restarted_by_another_worker_streams_over_the_same_message(redis_url: str) -> None:
    async def scenario() -> None:
        fake = FakeSlack()
        await fake.start()
        redis = aioredis.from_url(redis_url)
        try:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
            route = Route(VIA_CHAT, CHANNEL, f"slack:{TEAM_ID}:{CHANNEL}", thread_ts="1700000011.000100")
            async with aiohttp.ClientSession() as http:
                reply = SlackReply(route, client, http, PermalinkStore(redis), update_interval_s=0)
                await reply.feed(ReplyEvent("j3", ReplyType.DELTA, seq=1, text="The night "))
                await reply.feed(ReplyEvent("j3", ReplyType.DELTA, seq=2, text="train "))
                # The first worker died; the job's second delivery (attempt 2) numbers its events from 1 again.
                await reply.feed(ReplyEvent("j3", ReplyType.DELTA, seq=1, text="The night ", attempt=2))
                await reply.feed(ReplyEvent("j3", ReplyType.DELTA, seq=3, text="leaves ", attempt=1))  # late
                # Deltas inside the update interval wait for the router's timer: show what arrived since.
                await reply.flush()
                [shown] = thread_messages(fake, CHANNEL, "1700000011.000100")
                # Not "The night train The night"; a growing message ends with the reply model's cursor.
                assert shown.removesuffix(STREAMING_CURSOR).strip() == "The night"
                await reply.feed(ReplyEvent("j3", ReplyType.DELTA, seq=2, text="bus ", attempt=2))
                await reply.feed(ReplyEvent("j3", ReplyType.FINAL, seq=3, text="The night bus.", attempt=2))
            [post] = fake.api("chat.postMessage", thread_ts="1700000011.000100")  # edited, never reposted
            assert thread_messages(fake, CHANNEL, "1700000011.000100") == ["The night bus."]
            edits = [c.args["text"] for c in fake.api("chat.update", ts=post.args["ts"])]
            assert not [text for text in edits if "train The night" in text or "leaves" in text]
        finally:
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())


def test_shutdown_is_bounded_when_a_task_swallows_its_cancel(redis_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(slack_adapter_module, "CLOSE_TIMEOUT_S", 2.0)

    async def scenario() -> None:
        fake = FakeSlack()
        await fake.start()
        redis = aioredis.from_url(redis_url)
        adapter = SlackAdapter(adapter_settings(fake), JobClient(redis, "slack-test-stubborn"))
        await adapter.start()
        release = asyncio.Event()
        cancels = 0

        async def stubborn() -> None:  # as a library call can on Python 3.11: it swallows a cancel
            nonlocal cancels
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    cancels += 1
        task = asyncio.create_task(stubborn())
        adapter._tasks.add(task)
        try:
            # close() returns instead of waiting forever; the reply reader may still be leaving its last
            # blocking read, so it can count too.
            assert await adapter.close() >= 1
            assert cancels >= 1 and not task.done()
        finally:
            release.set()
            await task
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())


def test_an_unsupported_file_sent_to_phobos_gets_a_reply_naming_the_formats(redis_url: str) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            exe = {"id": "F0EXE", "name": "tool.exe", "filetype": "binary", "mimetype": "application/octet-stream",
                   "size": 10, "url_private": h.fake.file_url("F0EXE/tool.exe")}
            # Shared in a channel without a word to Phobos: not ours, and nothing is said.
            await h.send_event(h.file_share("1700000014.000100", exe))
            # Sent to Phobos in a DM: it says which formats it reads.
            dm = {"type": "message", "subtype": "file_share", "user": USER, "text": "", "ts": "1700000014.000200",
                  "channel": h.dm, "channel_type": "im", "files": [exe], "team": TEAM_ID}
            await h.send_event(dm)
            await h.fake.wait_for(lambda: h.fake.api("chat.postMessage", channel=h.dm))
            [reply] = h.fake.api("chat.postMessage")
            assert reply.args["channel"] == h.dm and "*tool.exe*" in reply.args["text"]
            assert "PDF (.pdf)" in reply.args["text"] and "Word (.docx)" in reply.args["text"]
            assert h.fake.downloads == [] and await h.jobs_submitted() == 0

    asyncio.run(scenario())
