"""Slack membership lookups for DM questions: the real slack_sdk client against the fake's
users.conversations (pagination, Tier 3 rate limit, auth, scopes) and a real Redis for the cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from bot.slack.membership import MembershipUnavailable, SlackMembership
from bot.slack.settings import SlackSettings
from bot.slack.web_client import web_client
from tests.conftest import RedisServer
from tests.fakes.fake_slack import BOT_USER_ID, Channel, FakeSlack, SlackLimits

pytestmark = pytest.mark.slack

TEAM = "T0TEAM"
BOT_TOKEN = "xoxb-test-token"
QUESTIONS_PER_MINUTE = 20  # the goal: 20 questions a minute from different people
TIER3_PER_MINUTE = 50  # users.conversations' documented floor (Tier 3: 50+ a minute)


@asynccontextmanager
async def membership(redis_server: RedisServer, limits: SlackLimits | None = None, token: str = BOT_TOKEN,
                     ttl_s: float = 60.0) -> AsyncIterator[tuple[FakeSlack, SlackMembership]]:
    fake = FakeSlack(limits=limits or SlackLimits())
    await fake.start()
    redis = aioredis.from_url(redis_server.url)
    await redis.flushall()
    settings = SlackSettings(bot_token=token, signing_secret="s", mode="http", api_url=fake.url)
    try:
        yield fake, SlackMembership(web_client(settings), redis, ttl_s)
    finally:
        await redis.aclose()
        await fake.close()


def workspace(fake: FakeSlack, users: list[str], channels: int, *, private_every: int = 0) -> None:
    """``channels`` channels with the bot and every one of ``users`` in them."""
    for n in range(channels):
        is_private = bool(private_every) and n % private_every == 0
        fake.channels[f"C{n:05d}"] = Channel(f"chan-{n}", is_private, {BOT_USER_ID, *users})


def test_twenty_askers_a_minute_in_500_channels_each_stay_under_tier_3(redis_server: RedisServer) -> None:
    """One call per asker (a page holds 999 channels) plus one for the bot: 21 calls for 20 questions,
    under Tier 3's 50 a minute; the fake answers 429 past 50 in its minute, and answered none."""
    async def scenario() -> None:
        async with membership(redis_server) as (fake, lookup):
            users = [f"U{n:03d}" for n in range(QUESTIONS_PER_MINUTE)]
            workspace(fake, users, 500, private_every=3)
            for user in users:
                reads = await lookup.reads(TEAM, user)
                assert reads.channels == 500
            calls = len(fake.api("users.conversations"))
            assert calls == QUESTIONS_PER_MINUTE + 1 <= TIER3_PER_MINUTE
            assert fake.rate_limited["users.conversations"] == 0
            for user in users:  # asked again within the cache's lifetime: no call at all
                await lookup.reads(TEAM, user)
            assert len(fake.api("users.conversations")) == calls

    asyncio.run(scenario())


def test_short_pages_are_followed_by_cursor_and_the_limit_is_slacks(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with membership(redis_server, SlackLimits(page_max=200)) as (fake, lookup):
            workspace(fake, ["U1"], 500)
            reads = await lookup.reads(TEAM, "U1")
            assert reads.channels == 500
            asked = fake.api("users.conversations", user="U1")
            assert len(asked) == 3 and all(int(c.args["limit"]) == 999 for c in asked)
            assert [bool(c.args.get("cursor")) for c in asked] == [False, True, True]

    asyncio.run(scenario())


def test_a_429_is_waited_out_per_retry_after(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        limits = SlackLimits(membership_calls=2, membership_window_s=1.0)
        async with membership(redis_server, limits) as (fake, lookup):
            workspace(fake, ["U1", "U2"], 3)
            await lookup.reads(TEAM, "U1")  # the asker's call and the bot's
            reads = await lookup.reads(TEAM, "U2")  # over the window: 429, Retry-After, then answered
            assert reads.channels == 3
            assert fake.rate_limited["users.conversations"] >= 1

    asyncio.run(scenario())


def test_who_is_in_what_is_slacks_answer(redis_server: RedisServer) -> None:
    """Private channels only with membership, public ones only once joined, never without the bot."""
    async def scenario() -> None:
        async with membership(redis_server) as (fake, lookup):
            fake.channels["CFIN"] = Channel("finance", False, {BOT_USER_ID, "U1"})
            fake.channels["CPRIV"] = Channel("secret", True, {BOT_USER_ID, "U2"})
            fake.channels["CPUB"] = Channel("general", False, {BOT_USER_ID, "U2"})
            fake.channels["CNOBOT"] = Channel("nobot", False, {"U1"})
            fake.channels["CPRIVNOBOT"] = Channel("hidden", True, {"U1"})
            fake.channels["COLD"] = Channel("old", False, {BOT_USER_ID, "U1"}, is_archived=True)
            reads = await lookup.reads(TEAM, "U1")
            assert reads.channel_names == {f"slack:{TEAM}:CFIN": "finance"}
            assert reads.scope_keys == [f"slack:{TEAM}:CFIN"]

    asyncio.run(scenario())


def test_membership_events_drop_the_cache_at_once(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with membership(redis_server) as (fake, lookup):
            fake.channels["CFIN"] = Channel("finance", False, {BOT_USER_ID, "U1"})
            assert (await lookup.reads(TEAM, "U1")).channels == 1
            fake.channels["CFIN"].members.discard("U1")
            assert (await lookup.reads(TEAM, "U1")).channels == 1, "cached: no event yet"
            await lookup.on_event(TEAM, {"type": "member_left_channel", "user": "U1", "channel": "CFIN"},
                                  BOT_USER_ID)
            assert (await lookup.reads(TEAM, "U1")).channels == 0
            fake.channels["CFIN"].members.add("U1")
            await lookup.on_event(TEAM, {"type": "member_joined_channel", "user": "U1"}, BOT_USER_ID)
            assert (await lookup.reads(TEAM, "U1")).channels == 1
            fake.channels["CFIN"].is_archived = True
            await lookup.on_event(TEAM, {"type": "channel_archive", "channel": "CFIN"}, BOT_USER_ID)
            assert (await lookup.reads(TEAM, "U1")).channels == 0
            fake.channels["CFIN"].is_archived = False
            fake.channels["CFIN"].members.discard(BOT_USER_ID)  # the bot is removed
            await lookup.on_event(TEAM, {"type": "channel_unarchive", "channel": "CFIN"}, BOT_USER_ID)
            await lookup.on_event(TEAM, {"type": "channel_left", "channel": "CFIN"}, BOT_USER_ID)
            assert (await lookup.reads(TEAM, "U1")).channels == 0

    asyncio.run(scenario())


def test_a_lookup_in_flight_during_a_leave_does_not_cache_its_stale_answer(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with membership(redis_server) as (fake, lookup):
            fake.channels["CFIN"] = Channel("finance", False, {BOT_USER_ID, "U1"})
            fetch = lookup._fetch

            async def fetch_then_leave(who: str) -> dict[str, str]:
                found = await fetch(who)
                if who == "U1":  # the leave lands after Slack answered, before the answer is cached
                    fake.channels["CFIN"].members.discard("U1")
                    await lookup.on_event(TEAM, {"type": "member_left_channel", "user": "U1"}, BOT_USER_ID)
                return found

            lookup._fetch = fetch_then_leave  # type: ignore[method-assign]
            assert (await lookup.reads(TEAM, "U1")).channels == 1  # this question was asked before the leave
            lookup._fetch = fetch  # type: ignore[method-assign]
            assert (await lookup.reads(TEAM, "U1")).channels == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(("token", "scopes", "error"), [
    ("xoxb-revoked", None, "invalid_auth"),
    (BOT_TOKEN, frozenset({"channels:read"}), "missing_scope groups:read"),
])
def test_slack_refusing_the_lookup_is_an_error_with_slacks_reason(redis_server: RedisServer, token: str,
                                                                    scopes: frozenset[str] | None,
                                                                    error: str) -> None:
    async def scenario() -> None:
        async with membership(redis_server, token=token) as (fake, lookup):
            if scopes is not None:
                fake.token_scopes = scopes
            with pytest.raises(MembershipUnavailable, match=error):
                await lookup.reads(TEAM, "U1")

    asyncio.run(scenario())
