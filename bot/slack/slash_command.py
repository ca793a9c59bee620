"""/phobos and its subcommands: what the command text asks for. Pure parsing; the adapter submits the job."""

from __future__ import annotations

from dataclasses import dataclass

from bot.commands import commands_for, usage_lines
from bot.slack.payloads import PLATFORM
from core.text_safety import normalise_question
from jobs.protocol import JobKind

SLASH_COMMAND = "/phobos"
# Subcommands of /phobos -> job kind, and whether the reply is shown to the whole channel.
SUBCOMMANDS: dict[str, tuple[JobKind, bool]] = {c.name: (c.kind, c.is_public) for c in commands_for(PLATFORM)}
USAGE = "\n".join([
    "*/phobos* answers from the PDFs shared in this channel.",
    *(f"• `{line.split(': ', 1)[0]}`: {line.split(': ', 1)[1]}" for line in usage_lines("/phobos ", PLATFORM)),
    "Just `/phobos QUESTION` asks too. Or mention me with a question; share a PDF where I am a member "
    "and I index it.",
])
ASK_USAGE = "Usage: `/phobos ask QUESTION`"


@dataclass(frozen=True)
class Subcommand:
    kind: JobKind
    is_public: bool  # the reply is shown to the whole channel, not only to the one who asked
    text: str  # what follows the subcommand: the question for an ask (normalised, never empty)


def parse_command(text: str) -> Subcommand | str:
    """What ``/phobos TEXT`` asks for; a str is the reply to acknowledge it with instead (usage, a hint)."""
    word, _, rest = text.strip().partition(" ")
    name, rest = word.lower(), rest.strip()
    if not word or name == "help" or (name == "model" and not rest):
        return USAGE
    if name not in SUBCOMMANDS:  # "/phobos what is X" asks
        name, rest = "ask", text.strip()
    kind, is_public = SUBCOMMANDS[name]
    if kind is JobKind.ASK:
        rest = normalise_question(rest)  # it is also shown, in the header
        if not rest:
            return ASK_USAGE
    return Subcommand(kind, is_public, rest)
