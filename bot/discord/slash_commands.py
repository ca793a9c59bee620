"""The Discord command tree: one slash command per shared command, /model's autocomplete, "Ask Phobos".

Only the wiring lives here: each command hands its interaction to the adapter, which submits the job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.commands import Command, commands_for
from bot.discord.payloads import PLATFORM
from jobs.protocol import JobKind

AUTOCOMPLETE_LIMIT = 25  # Discord shows at most 25 choices
ASK_ABOUT_MESSAGE = "Ask Phobos"  # the message context-menu command
# Installable to a server and to a user; usable in servers, the bot's DM and other DMs / group DMs.
INSTALLS = app_commands.AppInstallationType(guild=True, user=True)
CONTEXTS = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True)

OnCommand = Callable[[discord.Interaction, JobKind, str], Awaitable[None]]  # (interaction, kind, its text)
OnAskAbout = Callable[[discord.Interaction, discord.Message], Awaitable[None]]
ModelNames = Callable[[], Awaitable[list[str]]]


def add_commands(tree: app_commands.CommandTree[Any], on_command: OnCommand, on_ask_about: OnAskAbout,
                 model_names: ModelNames) -> None:
    """One slash command per entry of the shared command table (bot/commands.py), and "Ask Phobos"."""
    async def model_choices(interaction: discord.Interaction,
                            current: str) -> list[app_commands.Choice[str]]:
        names = await model_names()
        matching = [n for n in names if current.lower() in n.lower()][:AUTOCOMPLETE_LIMIT]
        return [app_commands.Choice(name=n, value=n) for n in matching]

    for spec in commands_for(PLATFORM):
        command = _slash_command(spec, on_command)
        if spec.kind is JobKind.SET_MODEL:
            command.autocomplete("text")(model_choices)
        tree.add_command(command)

    async def ask_about(interaction: discord.Interaction, message: discord.Message) -> None:
        await on_ask_about(interaction, message)

    tree.add_command(app_commands.ContextMenu(name=ASK_ABOUT_MESSAGE, callback=ask_about))


def _slash_command(spec: Command, on_command: OnCommand) -> app_commands.Command[Any, Any, None]:
    kind = spec.kind
    if spec.argument:
        @app_commands.rename(text=spec.argument)
        @app_commands.describe(text=spec.argument_help)
        async def with_text(interaction: discord.Interaction, text: str) -> None:
            await on_command(interaction, kind, text)
        callback: Any = with_text
    else:
        async def without_text(interaction: discord.Interaction) -> None:
            await on_command(interaction, kind, "")
        callback = without_text
    return app_commands.Command(name=spec.name, description=spec.description, callback=callback)


async def may_set_dm_search(interaction: discord.Interaction) -> bool:
    """/dm-search is a server's policy: only in a server, only by members who may manage it."""
    if interaction.guild_id is None:
        await interaction.response.send_message("Run /dm-search in a server: it decides whether DM "
                                                "questions may read that server's channels.", ephemeral=True)
        return False
    if not interaction.permissions.manage_guild:
        await interaction.response.send_message("Only members who can manage this server may change whether "
                                                "DM questions read its channels.", ephemeral=True)
        return False
    return True
