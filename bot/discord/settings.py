"""What the Discord adapter is told: its token, who may use it, and how it answers. Plus the invite URL."""

from __future__ import annotations

from dataclasses import dataclass, field

import discord

INVITE_SCOPES = ("bot", "applications.commands")
MESSAGE_LIMIT = 2000  # characters per Discord message
INTERACTION_TOKEN_TTL_S = 15 * 60  # Discord expires an interaction's token after 15 minutes


@dataclass(frozen=True)
class DiscordSettings:
    """Plain settings; ``phobos/settings.py`` fills them from PHOBOS_DISCORD_* variables."""

    token: str = field(repr=False)
    application_id: int | None = None  # None: learned from Discord at login
    dev_guild_id: int | None = None  # sync slash commands to this guild only (instant); None: globally
    allowed_guild_ids: frozenset[int] = frozenset()  # empty: every guild
    allowed_channel_ids: frozenset[int] = frozenset()  # empty: every channel (a thread counts as its parent)
    allowed_role_ids: frozenset[int] = frozenset()  # empty: everyone; else the member needs one of them
    allow_dms: bool = True
    thread_on_channel_question: bool = True  # a question asked at channel level opens a thread
    max_attachment_mb: float = 25.0
    edit_interval_s: float = 1.0  # at most one edit per message per this many seconds
    # Follow up through the interaction until a minute before Discord expires its token.
    interaction_token_ttl_s: float = INTERACTION_TOKEN_TTL_S - 60
    answer_timeout_s: float = 30 * 60  # give up waiting for a worker's reply after this long
    interaction_retention_days: float = 90.0  # the interaction log's bounds, which ratings trim to as well
    interaction_max_entries: int = 100_000
    sync_commands: bool = True
    api_url: str = ""  # REST base, e.g. https://discord.com/api/v10; "": discord.py's default
    gateway_url: str = ""  # websocket URL; "": the one Discord names at login

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.max_attachment_mb * 1024 * 1024)


def point_at(settings: DiscordSettings) -> None:
    """Aim discord.py at another API base and gateway (a proxy, a local fake). Process-wide, as discord.py is."""
    import discord.gateway
    import discord.http
    import yarl

    if settings.api_url:
        discord.http.Route.BASE = settings.api_url.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def intents() -> discord.Intents:
    """Guilds, guild messages, DMs and message content (privileged: enable it in the developer portal)."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


def permissions() -> discord.Permissions:
    """What Phobos needs in a channel: read, answer, open threads for answers, and link to sources."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,  # to reply to a message and read its attachments
        embed_links=True,
        add_reactions=True,
    )


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds Phobos to a server with its slash commands and the permissions above."""
    return discord.utils.oauth_url(application_id, permissions=permissions(), scopes=INVITE_SCOPES)
