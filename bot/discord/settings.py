"""What the Discord adapter is told: its token, who may use it, and how it answers. Plus the invite URL.

The adapter runs when DISCORD_TOKEN is set (docs/discord.md); ``phobos/settings.py`` composes this section and
hands it whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from bot.settings import AdapterSettings
from core.env_settings import env
from core.sizes import bytes_from_mb

if TYPE_CHECKING:  # discord.py is imported where it is used: the section loads without the discord extra
    import discord

INVITE_SCOPES = ("bot", "applications.commands")
MESSAGE_LIMIT = 2000  # characters per Discord message
INTERACTION_TOKEN_TTL_S = 15 * 60  # Discord expires an interaction's token after 15 minutes

Ids = Annotated[frozenset[int], NoDecode]  # comma-separated in the environment


class DiscordSettings(AdapterSettings):
    """Everything the Discord adapter is configured with, from DISCORD_TOKEN and PHOBOS_DISCORD_* variables."""

    token: SecretStr = Field(SecretStr(""), validation_alias=env("DISCORD_TOKEN"))
    # Application id for the invite URL; empty: learned from Discord at login.
    application_id: int | None = Field(None, validation_alias=env("PHOBOS_DISCORD_APPLICATION_ID"))
    # Sync slash commands to this guild only (instant, for development); empty: globally.
    dev_guild_id: int | None = Field(None, validation_alias=env("PHOBOS_DISCORD_DEV_GUILD_ID"))
    # Comma-separated ids; empty allows all. A thread counts as its parent channel.
    allowed_guild_ids: Ids = Field(frozenset(), validation_alias=env("PHOBOS_DISCORD_ALLOWED_GUILDS"))
    allowed_channel_ids: Ids = Field(frozenset(), validation_alias=env("PHOBOS_DISCORD_ALLOWED_CHANNELS"))
    # Empty: everyone; else the member needs one of these roles.
    allowed_role_ids: Ids = Field(frozenset(), validation_alias=env("PHOBOS_DISCORD_ALLOWED_ROLES"))
    allow_dms: bool = Field(True, validation_alias=env("PHOBOS_DISCORD_ALLOW_DMS"))
    # A question asked at channel level opens a thread from the message for the answer.
    thread_on_channel_question: bool = Field(True, validation_alias=env("PHOBOS_DISCORD_THREAD_ON_CHANNEL_QUESTION"))
    # Largest attachment indexed, in megabytes of 1,000,000 bytes (core/sizes.py).
    max_attachment_mb: float = Field(25.0, validation_alias=env("PHOBOS_DISCORD_MAX_ATTACHMENT_MB"))
    # At most one edit per message per this many seconds while an answer streams.
    edit_interval_s: float = Field(1.0, validation_alias=env("PHOBOS_DISCORD_EDIT_INTERVAL_S"))
    # Follow up through the interaction until a minute before Discord expires its token (not an environment variable).
    interaction_token_ttl_s: float = INTERACTION_TOKEN_TTL_S - 60
    sync_commands: bool = Field(True, validation_alias=env("PHOBOS_DISCORD_SYNC_COMMANDS"))
    # Discord's REST API base, e.g. https://discord.com/api/v10 (a proxy, or a local fake); empty: discord.py's.
    api_url: str = Field("", validation_alias=env("PHOBOS_DISCORD_API_URL"))
    # Discord's gateway websocket URL; empty: the one discord.py asks Discord for.
    gateway_url: str = Field("", validation_alias=env("PHOBOS_DISCORD_GATEWAY_URL"))

    @field_validator("application_id", "dev_guild_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allowed_guild_ids", "allowed_channel_ids", "allowed_role_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(int(part) for part in value.replace(" ", "").split(",") if part)
        return value

    @property
    def max_attachment_bytes(self) -> int:
        return bytes_from_mb(self.max_attachment_mb)


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
    import discord

    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


def permissions() -> discord.Permissions:
    """What Phobos needs in a channel: read, answer, open threads for answers, and link to sources."""
    import discord

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
    import discord.utils

    return discord.utils.oauth_url(application_id, permissions=permissions(), scopes=INVITE_SCOPES)
