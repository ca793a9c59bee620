"""👍/👎 on Slack: the real bolt app, signed block_actions and view_submission requests, the strict fake
Slack (tests/fakes/fake_slack.py), a real Redis and a real worker that keeps question text."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.slack.feedback import RATE_ACTION_ID, REASON_ACTION_ID, REASON_BLOCK_ID
from bot.slack.permalinks import PermalinkStore
from bot.slack.replies import VIA_CHAT, Route, SlackReply
from bot.slack.settings import SlackSettings
from jobs.interactions import InteractionLog
from jobs.protocol import JobKind, ReplyEvent, ReplyType
from tests.fakes.fake_slack import TEAM_ID, FakeSlack, SlackLimits
from tests.ratings import export_feedback, wait_for_rating
from tests.test_slack_adapter import BOT_TOKEN, USER, Harness, harness, share_pdf
from tests.test_slack_adapter import web_client as slack_web_client

pytestmark = pytest.mark.slack

QUESTION = "When does the night train to Hallstatt leave?"


def interaction(h: Harness, payload: dict[str, Any]) -> Any:
    """POST an interaction payload the way Slack does: a signed form with one ``payload`` field."""
    base = {"team": {"id": TEAM_ID, "domain": "test"}, "api_app_id": "A0APP", "token": "x",
            "user": {"id": USER, "username": "ada", "team_id": TEAM_ID}}
    return h.post_signed(urllib.parse.urlencode({"payload": json.dumps({**base, **payload})}),
                         "application/x-www-form-urlencoded")


def click(h: Harness, rating: str, job_id: str, message_ts: str) -> Any:
    return interaction(h, {
        "type": "block_actions", "trigger_id": h.fake.trigger_id(), "response_url": h.fake.response_url(),
        "channel": {"id": h.channel, "name": "general"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": h.channel},
        "message": {"ts": message_ts, "text": "..."},
        "actions": [{"type": "feedback_buttons", "action_id": RATE_ACTION_ID, "block_id": "phobos_rate",
                     "value": f"{rating}:{job_id}", "text": {"type": "plain_text", "text": "👍"},
                     "action_ts": str(time.time())}]})


async def answer_with_buttons(h: Harness, ask_ts: str) -> tuple[str, str]:
    """Ask, wait for the final answer's buttons; returns the answer's message ts and the job id."""
    status, _ = await h.send_event(h.mention(QUESTION, ask_ts))
    assert status == 200

    def buttons() -> list[dict[str, Any]]:
        return [b for blocks in h.fake.blocks(h.channel).values() for b in blocks if b["type"] == "context_actions"]

    await h.fake.wait_for(lambda: bool(buttons()))
    (ts,) = [ts for ts, blocks in h.fake.blocks(h.channel).items() if blocks[-1]["type"] == "context_actions"]
    (element,) = buttons()[0]["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == RATE_ACTION_ID
    good, bad = element["positive_button"]["value"], element["negative_button"]["value"]
    assert good.startswith("good:") and bad.startswith("bad:") and good[5:] == bad[4:]
    return ts, bad.removeprefix("bad:")


def test_a_thumbs_down_on_slack_with_a_reason_lands_in_the_log_and_is_exported(
        redis_server, redis_client, start_worker) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_LOG_TEXT="true",
                 PHOBOS_CHUNK_TOKENS="60", PHOBOS_TOP_K="1")

    async def scenario() -> str:
        async with harness(redis_server.url) as h:
            await share_pdf(h, ts="1700000100.000100", name="facts.pdf")
            ask_ts = "1700000100.000200"
            message_ts, job_id = await answer_with_buttons(h, ask_ts)
            # Streamed natively: the answer is the stream's text; the stop added the sources and 👍/👎.
            sections = [b for b in h.fake.blocks(h.channel)[message_ts] if b["type"] == "section"]
            assert "facts.pdf, p. 4" in sections[0]["text"]["text"]
            assert "platform nine" in h.fake.messages(h.channel)[message_ts]

            status, _ = await click(h, "bad", job_id, message_ts)
            assert status == 200  # acked at once
            await h.fake.wait_for(lambda: bool(h.fake.api("views.open")))
            view = h.fake.api("views.open")[0].args["view"]
            view = json.loads(view) if isinstance(view, str) else view
            assert view["title"]["text"] == "What was wrong?" and view["blocks"][0]["optional"] is True

            view["state"] = {"values": {REASON_BLOCK_ID: {REASON_ACTION_ID: {
                "type": "plain_text_input", "value": "it cited the railway page"}}}}
            status, body = await interaction(h, {"type": "view_submission", "trigger_id": h.fake.trigger_id(),
                                                 "view": view})
            assert status == 200 and not body  # an empty ack closes the modal
            return job_id

    job_id = asyncio.run(scenario())
    wait_for_rating(redis_client, lambda r: r.reasons)
    (rated_answer,) = InteractionLog(redis_client).rated_answers()
    assert rated_answer.answer.job_id == job_id and rated_answer.rating == "bad"
    assert len(rated_answer.ratings) == 1, "the reason replaces the bare 👎 of the same person"

    output, (line,) = export_feedback(redis_server.url)
    assert line["id"] == job_id and line["question"] == QUESTION
    assert line["rating"] == "bad" and line["reasons"] == ["it cited the railway page"]
    assert line["doc"] == "facts.pdf" and line["pages"] == [4]
    assert "U0USER" not in output, "raters are never exported"


def test_a_thumbs_down_whose_trigger_expired_is_kept_without_a_reason(redis_server, redis_client,
                                                                      start_worker) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive")

    async def scenario() -> str:
        async with harness(redis_server.url, limits=SlackLimits(trigger_ttl_s=0.0)) as h:
            message_ts, job_id = await answer_with_buttons(h, "1700000200.000200")
            status, _ = await click(h, "bad", job_id, message_ts)
            assert status == 200
            await h.fake.wait_for(lambda: any(c.method == "views.open" for c in h.fake.refused))
            assert not h.fake.api("views.open")
            status, _ = await click(h, "good", job_id, message_ts)  # a change of mind replaces the 👎
            assert status == 200
            return job_id

    job_id = asyncio.run(scenario())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rated = InteractionLog(redis_client).rated_answers()
        if rated and rated[0].rating == "good":
            break
        time.sleep(0.05)
    (rated_answer,) = InteractionLog(redis_client).rated_answers()
    assert rated_answer.answer.job_id == job_id and rated_answer.rating == "good"
    assert not rated_answer.reasons


def test_a_long_final_answer_keeps_its_buttons_within_block_kit_limits(redis_server) -> None:
    async def scenario() -> None:
        fake = FakeSlack(limits=SlackLimits(post_burst=20))
        await fake.start()
        redis = aioredis.from_url(redis_server.url)
        try:
            client = slack_web_client(SlackSettings(bot_token=BOT_TOKEN, app_token="xapp-test", api_url=fake.url))
            route = Route(VIA_CHAT, "C0LONG", f"slack:{TEAM_ID}:C0LONG", thread_ts="1700000300.000100",
                          kind=JobKind.ASK.value)
            answer = "\n".join(f"Line {i}: a sentence of a long answer about the reactor." for i in range(128))
            async with aiohttp.ClientSession() as http:
                reply = SlackReply(route, client, http, PermalinkStore(redis), update_interval_s=0)
                await reply.feed(ReplyEvent("slack:long", ReplyType.DELTA, seq=1, text=answer))
                await reply.flush()
                await reply.feed(ReplyEvent("slack:long", ReplyType.FINAL, seq=2, text=answer))
            assert not [c for c in fake.refused if c.method.startswith("chat.")], "never refused"
            shown = fake.blocks("C0LONG")
            assert len(shown) == 1, "only the last message carries the buttons"
            ((last_ts, blocks),) = shown.items()
            assert len(fake.messages("C0LONG")[last_ts]) > 3000, "more than one section block holds"
            assert [b["type"] for b in blocks] == ["section", "section", "context_actions"]
            assert "Line 127" in blocks[1]["text"]["text"]
        finally:
            await redis.aclose()
            await fake.close()

    asyncio.run(scenario())
