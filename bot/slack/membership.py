"""Which channels of a Slack workspace a DM's asker is a member of now: the scopes a DM question reads.

Slack answers, never user text: ``users.conversations`` with ``user=U`` lists the channels U is in (the
public ones, and the private ones where the bot is a member too, as Slack restricts a bot's view),
intersected with the bot's own channels (the same method without ``user``). So a public channel the
asker has not joined does not count, nor a private one they are not in, nor a channel the bot is not
in, nor another workspace (the scopes name this one).

Rate limits (https://docs.slack.dev/reference/methods/users.conversations): the method is Tier 3, 50+
calls a minute per workspace. A page holds up to 999 channels (``limit=999``), so one question costs one
call for its asker (ceil(channels / 999) beyond that), plus one for the bot per cache lifetime. With
answers cached ``ttl_s`` (60 s by default) per asker, 20 questions a minute from 20 different people
cost at most 20 + 1 = 21 calls a minute, under 50; the same person asking again within ``ttl_s`` costs
none. Past a limit the SDK waits out Retry-After (bot/slack/web_client.py).

The cache lives in Redis (every adapter on every host shares it) and is dropped at once, never merely
aged out, by the events that change what someone reads: ``member_joined_channel`` and
``member_left_channel`` drop that person's entry (the bot's: everyone's); ``channel_left``,
``group_left``, archives, unarchives, deletions and renames drop the workspace's. Each drop bumps a
generation, so a lookup that was in flight during the event cannot write its stale answer back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.scope import Scope
from jobs import keys
from jobs.reads import Reads, with_threads

log = logging.getLogger(__name__)

PLATFORM = "slack"
PAGE_LIMIT = 999  # users.conversations' largest page
CHANNEL_TYPES = "public_channel,private_channel"  # needs channels:read and groups:read
MAX_PAGES = 20  # 19,980 channels; a runaway cursor ends here
BOT = "bot"  # the cache entry of the bot's own channels
# Events that change who reads what in a whole workspace (the bot left, a channel closed or was renamed).
WORKSPACE_EVENTS = ("channel_left", "group_left", "channel_archive", "group_archive", "channel_unarchive",
                    "group_unarchive", "channel_deleted", "group_deleted", "channel_rename", "group_rename")
MEMBER_EVENTS = ("member_joined_channel", "member_left_channel")  # one person joined or left one channel


class MembershipUnavailable(Exception):
    """Slack did not say which channels someone is in (a missing scope, a revoked token, an outage)."""


class SlackMembership:
    """Channels a user reads in one workspace, from users.conversations, cached in Redis for ``ttl_s``."""

    def __init__(self, client: AsyncWebClient, redis: Any, ttl_s: float):
        self.client = client
        self.redis = redis
        self.ttl_s = ttl_s

    async def reads(self, team: str, user: str) -> Reads:
        """The channel and thread scopes ``user`` may read from a DM in workspace ``team``, with names."""
        mine = await self._channels(team, user)
        bots = await self._channels(team, BOT)
        shared = {Scope(PLATFORM, team, channel_id): name for channel_id, name in mine.items() if channel_id in bots}
        return await with_threads(self.redis, shared)  # a Slack thread's members are its channel's

    async def forget(self, team: str, user: str | None = None) -> None:
        """Drop one person's cached channels now, or (``user`` None) everyone's in the workspace."""
        key = _generation_key(team, user)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self._generation_ttl_s())
            await pipe.execute()

    async def on_event(self, team: str, event: Mapping[str, Any], bot_user_id: str | None) -> None:
        """Drop what a membership event makes stale."""
        kind = str(event.get("type", ""))
        if kind in WORKSPACE_EVENTS:
            await self.forget(team)
        elif kind in MEMBER_EVENTS:
            user = str(event.get("user", ""))
            await self.forget(team, None if not user or user == bot_user_id else user)

    async def _channels(self, team: str, who: str) -> dict[str, str]:
        generations = await self.redis.mget(_generation_key(team, None), _generation_key(team, who))
        entry = _entry_key(team, who, *(int(g or 0) for g in generations))
        cached = await self.redis.get(entry)
        if cached is not None:
            return dict(json.loads(cached))
        channels = await self._fetch(who)
        # Written under the generations read before the fetch: a drop meanwhile makes this entry unread.
        await self.redis.set(entry, json.dumps(channels), px=max(1, int(self.ttl_s * 1000)))
        return channels

    async def _fetch(self, who: str) -> dict[str, str]:
        channels: dict[str, str] = {}
        cursor = ""
        for _ in range(MAX_PAGES):
            try:
                page = await self.client.users_conversations(
                    types=CHANNEL_TYPES, exclude_archived=True, limit=PAGE_LIMIT,
                    user=None if who == BOT else who, cursor=cursor or None)
            except SlackApiError as exc:
                error = exc.response.get("error", "error")
                needed = exc.response.get("needed")
                raise MembershipUnavailable(f"{error} {needed}" if needed else str(error)) from exc
            for channel in page.get("channels") or []:
                if not channel.get("is_archived"):
                    channels[str(channel["id"])] = str(channel.get("name") or channel["id"])
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                return channels
        log.warning("users.conversations for %s still had pages after %d; using the first", who, MAX_PAGES)
        return channels

    def _generation_ttl_s(self) -> int:
        # Outlives every entry written under an older generation (its lifetime plus a slow fetch).
        return int(10 * self.ttl_s) + 600


def _generation_key(team: str, who: str | None) -> str:
    return keys.MEMBERSHIP_PREFIX + f"{PLATFORM}:{team}:generation" + (f":{who}" if who else "")


def _entry_key(team: str, who: str, team_generation: int, own_generation: int) -> str:
    return keys.MEMBERSHIP_PREFIX + f"{PLATFORM}:{team}:{team_generation}:{own_generation}:{who}"
