"""Replies to jobs submitted before the adapter restarted: shown where their question was asked.

The reply event's meta names the channel (and the thread the question opened); the answer goes on in
the messages it was streaming into (their ids are in Redis, :class:`bot.messages.PostedStore`), with its
👍/👎 and source links like any other answer.
"""

from __future__ import annotations

import discord
import redis.asyncio as aioredis

from bot.discord.links import SourceLinks
from bot.discord.replies import MARKUP, AnswerReply, ChannelSurface
from bot.messages import PostedStore
from core.scope import Scope
from jobs.protocol import JobKind, ReplyEvent


def late_reply(client: discord.Client, event: ReplyEvent, redis: aioredis.Redis, links: SourceLinks,
               interval_s: float) -> AnswerReply | None:
    """The reply for ``event``'s job, or None where the event says nothing of where it was asked."""
    if not event.meta.get("channel_id"):
        return None
    # The thread the question opened (Discord gives it the question's id), else the channel.
    candidates = [int(event.meta[k]) for k in ("thread_id", "channel_id") if event.meta.get(k)]

    async def find_channel() -> discord.abc.Messageable:
        for channel_id in candidates:
            try:
                channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
            except discord.NotFound:
                continue  # the thread was never opened
            if isinstance(channel, discord.abc.Messageable):
                return channel
        raise RuntimeError(f"no channel of {candidates} takes messages")

    surface = ChannelSurface(None, resolve=find_channel, interval_s=interval_s,
                             store=PostedStore(redis, event.job_id))
    scope = Scope.parse(event.meta["scope"]) if event.meta.get("scope") else None
    return AnswerReply(surface, MARKUP, is_rated=event.meta.get("kind") == JobKind.ASK.value,
                       links=links.for_answer(scope) if scope else None)
