"""The one command table: every platform's commands (Slack's /phobos subcommands, Discord's slash
commands, the console's /commands) are made from it, so they cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.protocol import JobKind

PLATFORMS = ("slack", "discord", "console")


@dataclass(frozen=True)
class Command:
    name: str
    kind: JobKind
    description: str
    argument: str = ""  # the one argument's name ("" for none), as Discord shows it
    argument_help: str = ""
    is_public: bool = False  # its reply is shown to the whole conversation, not only to the one who asked
    is_argument_required: bool = True
    platforms: tuple[str, ...] = PLATFORMS  # where it is offered


COMMANDS: tuple[Command, ...] = (
    Command("ask", JobKind.ASK, "Ask a question about the PDFs shared in this conversation",
            "question", "What you want to know", is_public=True),
    Command("model", JobKind.SET_MODEL, "Choose the model that answers in this conversation",
            "name", "A model name; start typing to see the models workers serve", is_public=True),
    Command("models", JobKind.MODELS, "List the models and whether a worker serves them"),
    Command("docs", JobKind.DOCS, "List the documents a question here would search"),
    Command("forget", JobKind.FORGET, "Remove a document from this conversation",
            "document", "The file name, as /docs lists it (or all)", is_public=True),
    Command("status", JobKind.STATUS, "Workers, queue depth and models"),
    Command("reset", JobKind.RESET, "Forget this conversation's earlier questions and answers", is_public=True),
    # A policy for the whole server, so only members with Manage Server may change it (the adapter checks).
    Command("dm-search", JobKind.DM_SEARCH, "Let DM questions read the channels of this server the asker can read",
            "setting", "on or off (off by default)", is_public=True, platforms=("discord",)),
)
BY_NAME = {command.name: command for command in COMMANDS}


def commands_for(platform: str) -> tuple[Command, ...]:
    """The commands offered on ``platform``."""
    return tuple(command for command in COMMANDS if platform in command.platforms)


def usage_lines(prefix: str, platform: str = "") -> list[str]:
    """One line per command, e.g. ``/phobos forget DOCUMENT: Remove a document ...`` for ``prefix="/phobos "``."""
    lines = []
    for command in commands_for(platform) if platform else COMMANDS:
        argument = f" {command.argument.upper()}" if command.argument else ""
        lines.append(f"{prefix}{command.name}{argument}: {command.description}")
    return lines
