"""Slack and Discord under their real limits: many answers at once, an adapter restart, nothing lost.

The real slack-bolt/slack_sdk and discord.py clients run against the strict fakes (429 with
Retry-After, per-channel posting and per-workspace edit limits scaled down to seconds), a real Redis
and real ``phobos worker`` processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.signature import SignatureVerifier

from bot.discord.adapter import DiscordAdapter
from bot.discord.settings import DiscordSettings
from bot.slack.adapter import SlackAdapter
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import ReplyEvent
from tests.conftest import RedisServer
from tests.fakes.fake_discord import BOT_TOKEN as DISCORD_TOKEN
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_slack import (
    BOT_USER_ID,
    STREAM_METHODS,
    TEAM_ID,
    FakeSlack,
    SlackLimits,
    assistant_thread_started,
)
from tests.pdfs import FACT_PAGES, pdf_with_pages
from tests.test_discord_adapter import finals, running_bot
from tests.test_slack_adapter import SIGNING_SECRET, USER, adapter_settings, event_callback, harness, share_pdf

pytestmark = [pytest.mark.slack, pytest.mark.discord]

# Slack's shapes on a shorter clock: per workspace window, Tier 3 edits, Tier 4 stream appends and Tier 2
# stream starts and stops in the ratio of their real limits (50 : 100 : 20), posts per channel with a burst.
FAST_SLACK = SlackLimits(tier3_calls=10, tier3_window_s=2.0, tier4_calls=20, tier2_calls=4, post_per_s=2.0,
                         post_burst=3)
FAST_SLACK_EDITS_PER_MIN = 0.9 * 10 / 2.0 * 60  # the adapter's budgets: just under the fake's limits
FAST_SLACK_APPENDS_PER_MIN = 0.9 * 20 / 2.0 * 60
QUESTIONS = [  # (question, what its answer quotes)
    ("When was the lighthouse lens made?", "1872"),
    ("How many hives does the apiary on the north meadow have?", "twelve hives"),
    ("When did Mount Kessler last erupt?", "1931"),
    ("When does the night train to Hallstatt leave?", "platform nine"),
]
ANSWERS = 12
SLOW_ECHO = "slow-echo"


def slow_echo_models(tmp_path: Path) -> Path:
    """A models file with an echo model that streams one word every 50 ms: answers take seconds."""
    path = tmp_path / "models.toml"
    path.write_text(f'[models.{SLOW_ECHO}]\nbackend = "echo"\ncontext_tokens = 100000\nmax_new_tokens = 256\n'
                    'weights = "delay_s=0.05"\n')
    return path


def thread_texts(fake: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    posted = fake.thread_posts(channel, thread_ts)
    shown = fake.messages(channel)
    return [shown[ts] for ts in posted if ts in shown]


def calls_per_answer(fake: FakeSlack, channel: str, thread_ts: str) -> dict[str, int]:
    """The Web API calls one answer took, by method: those that started its messages and those on them."""
    started = set(fake.thread_posts(channel, thread_ts))
    counts = collections.Counter(c.method for c in fake.calls if c.args.get("channel") == channel and (
        c.args.get("ts") in started or c.args.get("thread_ts") == thread_ts))
    return dict(counts)


def assert_streams_append_each_piece_once(fake: FakeSlack, channel: str) -> None:
    """Every stream reads exactly its start, appends and stop, in order: no piece sent twice or lost."""
    for ts in fake.streams:
        calls = [c for c in fake.calls if c.method in STREAM_METHODS and c.args.get("ts") == ts]
        assert calls[0].method == "chat.startStream" and calls[-1].method == "chat.stopStream"
        pieces = [str(c.args.get("markdown_text") or "") for c in calls]
        assert all(pieces[1:-1]), "every append carries new text"
        assert fake.messages(channel)[ts].startswith("".join(pieces).rstrip()), ts


async def slack_answers(redis_url: str, *, in_pane: bool = False) -> int:
    """12 questions at once in one workspace, each answered with sources in its thread: mentions in one
    channel, or (``in_pane``) DMs in twelve assistant pane threads."""
    async with harness(redis_url, limits=FAST_SLACK, edits_per_min=FAST_SLACK_EDITS_PER_MIN,
                       appends_per_min=FAST_SLACK_APPENDS_PER_MIN) as h:
        await share_pdf(h, ts="1700000100.000100", name="facts.pdf")  # shared in the channel
        asked: dict[str, str] = {}
        channel = h.dm if in_pane else h.channel
        h.fake.members[h.channel] = [USER]  # the pane's asker views the channel and is a member of it
        for n in range(ANSWERS):
            question, expected = QUESTIONS[n % len(QUESTIONS)]
            ts = f"1700000101.{n:06d}"
            if in_pane:  # the pane's thread was opened before; the question is a message in it
                thread = f"1700000090.{n:06d}"
                await h.send_event(assistant_thread_started(USER, h.dm, thread, context_channel=h.channel))
                event = {"type": "message", "user": USER, "text": question, "ts": ts, "thread_ts": thread,
                         "channel": h.dm, "channel_type": "im", "team": TEAM_ID}
                asked[thread] = expected
            else:
                event = h.mention(question, ts)
                event["user"] = f"U{n:04d}"
                asked[ts] = expected
            await h.send_event(event)
        # Top-level mentions are answered in their own thread, which still searches the channel's PDF.
        await h.fake.wait_for(lambda: all(
            any("Sources:" in t and expected in t for t in thread_texts(h.fake, channel, ts))
            for ts, expected in asked.items()), timeout_s=240)
        for ts in asked:
            assert sum("Sources:" in t for t in thread_texts(h.fake, channel, ts)) == 1
        # Native streaming within the budgets may meet no 429 at all; any that came was waited out.
        assert not h.fake.unhonoured, f"calls made inside a 429's Retry-After: {dict(h.fake.unhonoured)}"
        assert_streams_append_each_piece_once(h.fake, channel)
        per_answer = [calls_per_answer(h.fake, channel, ts) for ts in asked]
        print(f"slack {'pane' if in_pane else 'channel'}: 429s {dict(h.fake.rate_limited)}; "
              f"streams {len(h.fake.streams)}; calls per answer {per_answer}")
        return h.fake.total_rate_limited


async def discord_answers(redis_url: str) -> int:
    """12 mentions at once in one guild channel; each answered with sources in the thread it opens."""
    async with running_bot(redis_url) as (fake, _adapter):
        fake.edit_calls, fake.edit_window_s = 1, 1.0  # one edit a second per channel
        await fake.post_message("the facts", files=[("facts.pdf", "application/pdf", pdf_with_pages(FACT_PAGES))])
        await fake.wait_for(lambda: finals(fake, fake.channel_id, "✅"), timeout_s=120)
        asked = {}
        for n in range(ANSWERS):
            question, expected = QUESTIONS[n % len(QUESTIONS)]
            message = await fake.post_message(question, mention_bot=True, author_id=2000 + n)
            asked[message.id] = expected
        await fake.wait_for(lambda: all(any(expected in m.content for m in finals(fake, thread, "Sources:"))
                                        for thread, expected in asked.items()), timeout_s=240)
        for thread in asked:
            assert len(finals(fake, thread, "Sources:")) == 1
        assert fake.rate_limited > 0, "the limits were met"
        assert not [code for _request, code in fake.refused if code != 429], fake.refused
        print(f"discord 429s: {fake.rate_limited}")
        return fake.rate_limited


def test_twelve_answers_at_once_through_three_workers_all_arrive_under_the_limits(
        redis_server: RedisServer, start_worker: Any) -> None:
    for _ in range(3):
        start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_CHUNK_TOKENS="60",
                     PHOBOS_TOP_K="1")

    async def scenario() -> tuple[int, int, int]:
        return await asyncio.gather(slack_answers(redis_server.url), slack_answers(redis_server.url, in_pane=True),
                                    discord_answers(redis_server.url))

    slack_429s, pane_429s, discord_429s = asyncio.run(scenario())
    assert discord_429s > 0, "Discord's edit limit was met"
    print(f"429s: slack channel {slack_429s}, slack pane {pane_429s}, discord {discord_429s}")


async def finals_in_stream(redis: aioredis.Redis, stream: str) -> set[str]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream))
    events = [ReplyEvent.from_json(fields[b"event"]) for _id, fields in entries]
    return {e.job_id for e in events if e.is_terminal}


def echo_questions(prefix: str) -> dict[str, str]:
    """Four 40-word questions, each with its own words, keyed by a label."""
    return {f"{prefix}{n}": " ".join(f"{prefix}{n}x{i}" for i in range(40)) for n in range(4)}


async def wait_finals_in_stream(redis: aioredis.Redis, adapter_id: str, job_ids: set[str]) -> None:
    """Wait until every job's final event is on the adapter's reply stream (the workers finished)."""
    async with asyncio.timeout(180):
        while not job_ids <= await finals_in_stream(redis, keys.reply_stream(adapter_id)):
            await asyncio.sleep(0.1)


async def wait_all_acknowledged(redis: aioredis.Redis, adapter_id: str) -> None:
    async with asyncio.timeout(60):
        while (await redis.xpending(keys.reply_stream(adapter_id), keys.REPLY_GROUP))["pending"]:
            await asyncio.sleep(0.05)


async def slack_restart(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    fake = FakeSlack(limits=FAST_SLACK)
    await fake.start()
    adapter_id = f"slack-restart-{uuid.uuid4().hex[:6]}"
    channel = "C0RESTART"
    settings = adapter_settings(fake, edits_per_min=FAST_SLACK_EDITS_PER_MIN)
    questions = {f"1700000200.{n:06d}": q for n, q in enumerate(echo_questions("s").values())}
    try:
        first = SlackAdapter(settings, JobClient(redis, adapter_id))
        await first.start()
        try:
            for ts, question in questions.items():
                event = {"type": "app_mention", "user": "U0R", "text": f"<@{BOT_USER_ID}> {question}",
                         "ts": ts, "channel": channel, "event_ts": ts, "team": TEAM_ID}
                await post_event(first, event)
            # Killed while the answers stream: some text is up.
            await fake.wait_for(lambda: any("x1 " in t for t in fake.messages(channel).values()), timeout_s=120)
        finally:
            await first.close()
        await wait_finals_in_stream(redis, adapter_id, {f"slack:{TEAM_ID}:{channel}:{ts}" for ts in questions})

        second = SlackAdapter(settings, JobClient(redis, adapter_id))
        await second.start()
        try:
            await fake.wait_for(lambda: all(any(question in t for t in thread_texts(fake, channel, ts))
                                            for ts, question in questions.items()), timeout_s=120)
            await wait_all_acknowledged(redis, adapter_id)
        finally:
            await second.close()
        for ts, question in questions.items():
            texts = thread_texts(fake, channel, ts)
            assert len(texts) == 1 and question in texts[0], "the streamed message became the answer, once"
            assert await redis.exists(keys.POSTED_PREFIX + f"slack:{TEAM_ID}:{channel}:{ts}")
    finally:
        await fake.close()
        await redis.aclose()


async def discord_restart(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    fake = FakeDiscord()
    await fake.start()
    patch = pytest.MonkeyPatch()
    fake.patch_discord_py(patch)
    adapter_id = f"discord-restart-{uuid.uuid4().hex[:6]}"
    settings = DiscordSettings(token=DISCORD_TOKEN, dev_guild_id=fake.guild_id, edit_interval_s=0.2)
    questions = echo_questions("d")
    try:
        async with connected(settings, JobClient(redis, adapter_id)):
            asked = {(await fake.post_message(q, mention_bot=True)).id: q for q in questions.values()}
            await fake.wait_for(lambda: any("x1 " in m.content for m in fake.bot_messages()), timeout_s=120)
        await wait_finals_in_stream(redis, adapter_id, {f"discord:{message_id}" for message_id in asked})
        async with connected(settings, JobClient(redis, adapter_id)):
            await fake.wait_for(lambda: all(any(q in m.content for m in finals(fake, thread))
                                            for thread, q in asked.items()), timeout_s=120)
            await wait_all_acknowledged(redis, adapter_id)
        for thread, question in asked.items():
            assert sum(question in m.content for m in finals(fake, thread)) == 1
    finally:
        await fake.close()
        await redis.aclose()
        patch.undo()


@contextlib.asynccontextmanager
async def connected(settings: DiscordSettings, jobs: JobClient) -> AsyncIterator[DiscordAdapter]:
    """The Discord adapter logged in to the patched fake until the block ends (then closed, as if killed)."""
    adapter = DiscordAdapter(settings, jobs, guild_ready_timeout=0.05)
    async with adapter:
        await adapter.login(DISCORD_TOKEN)
        connection = asyncio.create_task(adapter.connect(reconnect=False))
        await asyncio.wait_for(adapter.wait_until_ready(), timeout=30)
        try:
            yield adapter
        finally:
            await adapter.close()
            await connection


def test_adapters_killed_mid_stream_post_every_answer_once_after_restart(
        redis_server: RedisServer, start_worker: Any, tmp_path: Path) -> None:
    models = str(slow_echo_models(tmp_path))
    for _ in range(2):
        start_worker(SLOW_ECHO, PHOBOS_MODELS_FILE=models, PHOBOS_DEFAULT_MODEL=SLOW_ECHO,
                     PHOBOS_LAZY_EMBEDDER="true")

    async def scenario() -> None:
        await asyncio.gather(slack_restart(redis_server.url), discord_restart(redis_server.url))

    asyncio.run(scenario())


async def post_event(adapter: SlackAdapter, event: dict[str, Any]) -> None:
    """Deliver one Events API callback to the adapter's HTTP endpoint, signed."""
    body = json.dumps(event_callback(event))
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
               or ""}
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{adapter.http_port}/slack/events", data=body.encode(), headers=headers) as resp:
        assert resp.status == 200

