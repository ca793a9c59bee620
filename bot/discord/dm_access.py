"""Which guild channels a DM's asker can read now: the scopes a Discord DM question reads.

Only guilds whose admins turned it on (``/dm-search on``; off by default, a policy decision) and that
the bot shares with the asker count. In each, the asker's member record is fetched at question time
(``GET /guilds/{guild}/members/{user}``: their roles now; no privileged intent needed), and discord.py
computes their permissions in every channel from the guild's roles and the channel's overwrites, which
the gateway keeps current (``channel.permissions_for(member)``). A channel counts when the asker has
View Channel and Read Message History there, the bot can see it too, and the adapter's allow-lists
admit it. A thread follows its parent: a public thread's documents come with its channel; a private
thread's never do (its members are its own, which this does not check).

Cost: one member lookup per guild with the switch on per DM question; 20 questions a minute from
different people make 20 lookups a minute per such guild, and G such guilds 20 x G, against Discord's
global 50 requests a second (3,000 a minute: 150 guilds' worth). Discord does not publish the member
route's own bucket; it comes back in X-RateLimit headers, and discord.py waits out a 429 by itself.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.discord.payloads import PLATFORM, Gate
from core.scope import Scope
from jobs import keys
from jobs.reads import Reads, with_threads
from telemetry import metrics

log = logging.getLogger(__name__)

ON = "on"


def can_read(permissions: discord.Permissions) -> bool:
    return permissions.view_channel and permissions.read_message_history


class DmAccess:
    """The channels of shared guilds a user may read from a DM, found at question time."""

    def __init__(self, client: discord.Client, redis: Any, gate: Gate):
        self.client = client
        self.redis = redis
        self.gate = gate
        self._private_threads: dict[int, bool] = {}  # thread id -> is private (a thread's type never changes)

    async def reads(self, user_id: int) -> Reads:
        """The channel and thread scopes ``user_id`` reads now in guilds that allow DM questions, with names."""
        guilds = [g for g in self.client.guilds if not self.gate.guild_ids or g.id in self.gate.guild_ids]
        if not guilds:
            return Reads()
        switches = await self.redis.mget([keys.dm_search(PLATFORM, str(g.id)) for g in guilds])
        channels: dict[Scope, str] = {}
        for guild, switch in zip(guilds, switches, strict=True):
            if (switch.decode() if isinstance(switch, bytes) else switch) != ON:
                continue
            member = await self._member(guild, user_id)
            if member is None or guild.me is None:
                continue
            role_ids = [role.id for role in member.roles]
            for channel in guild.channels:
                if isinstance(channel, discord.CategoryChannel):
                    continue
                if (self.gate.admits(guild.id, channel.id, role_ids) and can_read(channel.permissions_for(member))
                        and can_read(channel.permissions_for(guild.me))):
                    channels[Scope(PLATFORM, str(guild.id), str(channel.id))] = channel.name
        return await with_threads(self.redis, channels, allow_thread=self._is_public_thread)

    async def _member(self, guild: discord.Guild, user_id: int) -> discord.Member | None:
        """The asker as a member of ``guild`` now, or None (not a member, or Discord would not say)."""
        try:
            return await guild.fetch_member(user_id)
        except discord.NotFound:
            return None
        except discord.HTTPException as exc:  # fail closed: this guild is not read for this question
            metrics.platform_error("discord", exc)
            log.warning("cannot look up member %s of guild %s (%s); its channels are not read", user_id,
                        guild.id, exc)
            return None

    async def _is_public_thread(self, thread_scope: Scope) -> bool:
        thread_id = int(thread_scope.thread or 0)
        if thread_id not in self._private_threads:
            guild = self.client.get_guild(int(thread_scope.workspace))
            thread = guild.get_thread(thread_id) if guild is not None else None
            if thread is None:  # archived threads are not cached
                try:
                    thread = await self.client.fetch_channel(thread_id)  # type: ignore[assignment]
                except discord.HTTPException:
                    return False
            if not isinstance(thread, discord.Thread):
                return False
            self._private_threads[thread_id] = thread.type is discord.ChannelType.private_thread
        return not self._private_threads[thread_id]
