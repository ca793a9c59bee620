"""Slack's native streaming and AI app pane: the real slack_sdk / bolt against the strict fake Slack.

Calls per answer are printed for the record (``pytest -s``): the same answer streamed natively and by
post-and-edit.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.budget import EditBudget
from bot.ratelimits import RateGate
from bot.slack.permalinks import PermalinkStore
from bot.slack.replies import VIA_CHAT, Route, SlackReply
from bot.slack.surfaces import StreamSupport
from core.documents import Citation
from jobs.protocol import JobKind, ReplyEvent, ReplyType
from tests.fakes.fake_slack import (
    STREAM_METHODS,
    TEAM_ID,
    FakeSlack,
    assistant_thread_context_changed,
    assistant_thread_started,
)
from tests.test_slack_adapter import (
    BOT_TOKEN,
    NO_DOCUMENTS,
    USER,
    harness,
    redis_url,
    share_pdf,
    thread_messages,
    worker,
)

pytestmark = pytest.mark.slack
__all__ = ["redis_url", "worker"]  # module fixtures shared with test_slack_adapter

CHANNEL = "C0STREAM"
WORDS = [f"word{n} " for n in range(40)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def one_answer(redis_url: str, fake: FakeSlack, thread_ts: str, *, native: bool,
                     final_text: str | None = None, attempt_two: bool = False) -> SlackReply:
    """Feed one answer of 40 deltas (each shown: no interval), then its final event, to a SlackReply."""
    redis = aioredis.from_url(redis_url)
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
    route = Route(VIA_CHAT, CHANNEL, f"slack:{TEAM_ID}:{CHANNEL}", thread_ts=thread_ts, user=USER,
                  kind=JobKind.ASK.value)
    streams = StreamSupport() if native else None
    try:
        async with aiohttp.ClientSession() as http:
            # Budgets without a limit: every delta is shown, so both ways are measured at the same pace.
            reply = SlackReply(route, client, http, PermalinkStore(redis), EditBudget(1e9, 0), update_interval_s=0,
                               append_budget=EditBudget(1e9, 0), streams=streams, gate=RateGate())
            for seq, word in enumerate(WORDS, start=1):
                await reply.feed(ReplyEvent(f"j-{thread_ts}", ReplyType.DELTA, seq=seq, text=word))
            if attempt_two:  # another worker starts over with other words
                await reply.feed(ReplyEvent(f"j-{thread_ts}", ReplyType.DELTA, seq=1, text="Other ", attempt=2))
            # As workers send it: the streamed text, trimmed.
            text = final_text if final_text is not None else "".join(WORDS).strip()
            await reply.feed(ReplyEvent(f"j-{thread_ts}", ReplyType.FINAL, seq=99, text=text,
                                        citations=(Citation("facts.pdf", (4,)),), attempt=2 if attempt_two else 1))
            return reply
    finally:
        await redis.aclose()


def sent_chars(fake: FakeSlack) -> int:
    return sum(len(str(c.args.get("text") or c.args.get("markdown_text") or "")) for c in fake.calls)


def test_native_streaming_sends_each_piece_once_and_stops_with_sources_and_feedback_buttons(redis_url: str) -> None:
    async def scenario() -> dict[str, Any]:
        measured: dict[str, Any] = {}
        for native in (True, False):
            fake = FakeSlack()
            await fake.start()
            try:
                await one_answer(redis_url, fake, "1700000400.000100", native=native)
                calls = collections.Counter(c.method for c in fake.calls)
                measured["native" if native else "post-and-edit"] = (dict(calls), sent_chars(fake))
                [shown] = thread_messages(fake, CHANNEL, "1700000400.000100")
                assert shown.startswith("".join(WORDS).strip()) and "[1] facts.pdf, p. 4" in shown
                if native:
                    assert calls == {"chat.startStream": 1, "chat.appendStream": len(WORDS) - 1, "chat.stopStream": 1}
                    pieces = [str(c.args.get("markdown_text") or "") for c in fake.calls if c.method in STREAM_METHODS]
                    assert pieces == [*WORDS, ""], "one call per piece, each piece once, in order"
                    [stop] = fake.api("chat.stopStream")
                    assert [b["type"] for b in stop.args["blocks"]] == ["section", "context_actions"]
                    assert not fake.refused
            finally:
                await fake.close()
        return measured

    measured = asyncio.run(scenario())
    print(f"calls and characters sent per 40-delta answer: {json.dumps(measured)}")
    native_calls, native_chars = measured["native"]
    edit_calls, edit_chars = measured["post-and-edit"]
    assert sum(native_calls.values()) <= sum(edit_calls.values())
    assert native_chars < edit_chars / 5, "each piece goes once instead of the whole text on every edit"


def test_a_workspace_that_refuses_streams_is_answered_by_post_and_edit_from_then_on(redis_url: str) -> None:
    async def scenario() -> None:
        fake = FakeSlack(refuses_streams=True)
        await fake.start()
        redis = aioredis.from_url(redis_url)
        support = StreamSupport()
        try:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
            async with aiohttp.ClientSession() as http:
                for n in range(2):
                    thread_ts = f"1700000401.00010{n}"
                    route = Route(VIA_CHAT, CHANNEL, f"slack:{TEAM_ID}:{CHANNEL}", thread_ts=thread_ts, user=USER,
                                  kind=JobKind.ASK.value)
                    reply = SlackReply(route, client, http, PermalinkStore(redis), update_interval_s=0,
                                       append_budget=EditBudget(6000.0, 0), streams=support)
                    await reply.feed(ReplyEvent(f"r{n}", ReplyType.DELTA, seq=1, text="The night "))
                    await reply.feed(ReplyEvent(f"r{n}", ReplyType.FINAL, seq=2, text="The night bus."))
                    assert thread_messages(fake, CHANNEL, thread_ts) == ["The night bus."]
            assert support.refused == {TEAM_ID}
            assert len([c for c in fake.refused if c.method == "chat.startStream"]) == 1, "asked once, then known"
            assert len(fake.api("chat.postMessage")) == 2
        finally:
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())


def test_a_final_that_is_not_the_stream_plus_more_stops_it_and_edits_the_message(redis_url: str) -> None:
    async def scenario() -> None:
        fake = FakeSlack()
        await fake.start()
        try:
            await one_answer(redis_url, fake, "1700000402.000100", native=True, final_text="Other words.",
                             attempt_two=True)
            [start] = fake.api("chat.startStream")
            [stop] = fake.api("chat.stopStream")
            assert not stop.args.get("markdown_text"), "nothing appended to a stream that says something else"
            assert fake.messages(CHANNEL)[start.args["ts"]].startswith("Other words.")
            assert fake.blocks(CHANNEL)[start.args["ts"]][-1]["type"] == "context_actions"
            assert thread_messages(fake, CHANNEL, "1700000402.000100") == [fake.messages(CHANNEL)[start.args["ts"]]]
        finally:
            await fake.close()

    asyncio.run(scenario())


def test_a_429_holds_that_method_in_that_workspace_until_its_retry_after() -> None:
    clock = Clock()
    gate = RateGate(clock=clock)
    gate.close_for("T1", "chat.update", 42)
    assert not gate.is_open("T1", "chat.update") and gate.wait_s("T1", "chat.update") == 42
    assert gate.is_open("T1", "chat.appendStream") and gate.is_open("T2", "chat.update"), "per method, per workspace"
    clock.now = 41.5
    assert not gate.is_open("T1", "chat.update")
    clock.now = 42.0
    assert gate.is_open("T1", "chat.update")


def test_the_pane_greets_with_prompts_titles_shows_status_and_streams_from_the_viewed_channel(
        redis_url: str, worker: None) -> None:
    async def scenario() -> list[str]:
        async with harness(redis_url) as h:
            await share_pdf(h, ts="1700000500.000100", name="facts.pdf")  # in the channel the user views
            h.fake.members[h.channel] = [USER]
            thread = "1700000500.000200"
            await h.send_event(assistant_thread_started(USER, h.dm, thread, context_channel=h.channel))
            await h.fake.wait_for(lambda: h.fake.api("assistant.threads.setSuggestedPrompts"))
            # The user looks at another channel, then back: the last one viewed is the one kept.
            for viewed in ("C0ELSEWHERE", h.channel):
                await h.send_event(assistant_thread_context_changed(USER, h.dm, thread, context_channel=viewed))
            question = {"type": "message", "user": USER, "text": "When does the night train to Hallstatt leave?",
                        "ts": "1700000500.000300", "thread_ts": thread, "channel": h.dm, "channel_type": "im",
                        "team": TEAM_ID}
            await h.send_event(question)
            await h.fake.wait_for(lambda: any("Sources:" in t for t in thread_messages(h.fake, h.dm, thread)))
            [title] = h.fake.api("assistant.threads.setTitle")
            assert title.args["title"] == "When does the night train to Hallstatt leave?"
            statuses = h.fake.api("assistant.threads.setStatus")
            assert statuses and statuses[0].args["loading_messages"]
            [start] = h.fake.api("chat.startStream", channel=h.dm)
            assert "recipient_user_id" not in start.args, "a DM stream needs no named reader"
            answer = thread_messages(h.fake, h.dm, thread)[-1]
            assert "platform nine" in answer and "facts.pdf, p. 4" in answer, "the viewed channel's PDF"
            # A second question keeps the title.
            await h.send_event({**question, "ts": "1700000500.000400", "text": "And the lighthouse lens?"})
            await h.fake.wait_for(lambda: sum("Sources:" in t or "No " in t
                                              for t in thread_messages(h.fake, h.dm, thread)) >= 2)
            assert len(h.fake.api("assistant.threads.setTitle")) == 1
            prompts = h.fake.api("assistant.threads.setSuggestedPrompts")[0].args["prompts"]
            transcript = [f"[greeting] {thread_messages(h.fake, h.dm, thread)[0]}",
                          f"[prompts] {[p['title'] for p in prompts]}",
                          f"[title] {title.args['title']}",
                          f"[status] {statuses[0].args['status']} / {statuses[0].args['loading_messages']}",
                          *(f"[message] {t}" for t in thread_messages(h.fake, h.dm, thread)[1:])]
            return transcript

    transcript = asyncio.run(scenario())
    print("\n".join(transcript))
    assert any("Summarise facts.pdf" in line for line in transcript if line.startswith("[prompts]"))


def test_the_pane_searches_the_viewed_channel_only_for_its_members(redis_url: str, worker: None) -> None:
    async def scenario() -> None:
        async with harness(redis_url) as h:
            await share_pdf(h, ts="1700000600.000100", name="facts.pdf")
            thread = "1700000600.000200"  # the asker is not a member of h.channel (conversations.members)
            await h.send_event(assistant_thread_started(USER, h.dm, thread, context_channel=h.channel))
            await h.send_event({"type": "message", "user": USER, "text": "When was the lighthouse lens made?",
                                "ts": "1700000600.000300", "thread_ts": thread, "channel": h.dm,
                                "channel_type": "im", "team": TEAM_ID})
            await h.fake.wait_for(lambda: any(NO_DOCUMENTS in t for t in thread_messages(h.fake, h.dm, thread)))
            assert not any("1872" in t for t in thread_messages(h.fake, h.dm, thread))

    asyncio.run(scenario())


def test_a_question_waiting_in_a_queue_shows_its_place_and_is_then_posted_and_edited(redis_url: str) -> None:
    async def scenario() -> None:
        fake = FakeSlack()
        await fake.start()
        redis = aioredis.from_url(redis_url)
        try:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
            thread_ts = "1700000403.000100"
            route = Route(VIA_CHAT, CHANNEL, f"slack:{TEAM_ID}:{CHANNEL}", thread_ts=thread_ts, user=USER,
                          kind=JobKind.ASK.value)
            async with aiohttp.ClientSession() as http:
                reply = SlackReply(route, client, http, PermalinkStore(redis), EditBudget(1e9, 0),
                                   update_interval_s=0, append_budget=EditBudget(1e9, 0), streams=StreamSupport())
                await reply.feed(ReplyEvent("q1", ReplyType.QUEUED, seq=1, position=3))
                assert thread_messages(fake, CHANNEL, thread_ts) == ["⏳ Queued, 3 ahead of you…"]
                await reply.feed(ReplyEvent("q1", ReplyType.DELTA, seq=2, text="The night "))
                await reply.feed(ReplyEvent("q1", ReplyType.FINAL, seq=3, text="The night bus."))
            assert thread_messages(fake, CHANNEL, thread_ts) == ["The night bus."]
            assert not fake.api("chat.startStream"), "the queued message became the answer"
        finally:
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())
