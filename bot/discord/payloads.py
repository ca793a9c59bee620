"""Discord events → Phobos jobs: scopes, job ids, questions and who may ask. Pure translation, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

from core.formats import accepted_name
from core.scope import Scope
from jobs import keys
from jobs.protocol import Job, JobKind

PLATFORM = "discord"
DM_WORKSPACE = "dm"  # the scope's workspace for direct messages, which have no guild
JOB_ID_PREFIX = "discord:"
PDF_CONTENT_TYPE = "application/pdf"
THREAD_NAME_LIMIT = 100  # Discord's maximum thread name length
_MENTION = re.compile(r"<@!?(\d+)>")


def scope_of(channel: object, guild_id: int | None) -> Scope:
    """The scope of a message or command in ``channel``; a thread's scope names its parent channel."""
    workspace = str(guild_id) if guild_id else DM_WORKSPACE
    if isinstance(channel, discord.Thread):
        return Scope(PLATFORM, workspace, str(channel.parent_id), str(channel.id))
    return Scope(PLATFORM, workspace, str(getattr(channel, "id", "")))


def thread_scope_for(message_id: int, scope: Scope) -> Scope:
    """The scope of the thread to be opened from a channel message (Discord gives it the message's id)."""
    return Scope(scope.platform, scope.workspace, scope.channel, str(message_id))


def parent_channel_id(channel: object) -> int | None:
    """The channel that allow-lists talk about: a thread's parent, else the channel itself."""
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    return getattr(channel, "id", None)


def question_of(content: str, bot_user_id: int) -> str:
    """The message text without the mention of the bot (other mentions are kept as written)."""
    text = _MENTION.sub(lambda m: "" if int(m.group(1)) == bot_user_id else m.group(0), content)
    return " ".join(text.split())


def is_pdf(attachment: discord.Attachment) -> bool:
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    return content_type == PDF_CONTENT_TYPE or accepted_name(attachment.filename)  # any format the worker indexes


def thread_name(question: str) -> str:
    name = question.strip() or "Question"
    return name if len(name) <= THREAD_NAME_LIMIT else name[: THREAD_NAME_LIMIT - 1] + "…"


def message_job_id(message_id: int) -> str:
    return f"{JOB_ID_PREFIX}{message_id}"


def attachment_job_id(message_id: int, attachment_id: int) -> str:
    # One message may carry several files; each is its own ingest job.
    return f"{JOB_ID_PREFIX}{message_id}:{attachment_id}"


def interaction_job_id(interaction_id: int) -> str:
    return f"{JOB_ID_PREFIX}{interaction_id}"


def make_job(job_id: str, kind: JobKind, scope: Scope, user_id: int, reply_to: str, *, text: str = "",
             file_name: str | None = None, channel_id: int, message_id: int | None = None,
             thread_id: int | None = None) -> Job:
    """A job whose ``meta`` says where to answer, so a restarted adapter can still post a late reply.

    ``thread_id``: the thread the answer goes to, when the question opens one (else the channel).
    """
    # kind and scope: a reply shown after a restart still carries 👍/👎 and links its sources.
    meta = {"channel_id": str(channel_id), "kind": kind.value, "scope": scope.key}
    if message_id is not None:
        meta["message_id"] = str(message_id)
    if thread_id is not None:
        meta["thread_id"] = str(thread_id)
    return Job(id=job_id, kind=kind, scope=scope, user=str(user_id), reply_to=reply_to, text=text,
               file_name=file_name, blob_key=keys.BLOB_PREFIX + job_id if kind is JobKind.INGEST else None,
               meta=meta)


@dataclass(frozen=True)
class Gate:
    """Who may use Phobos: optional allow-lists of guilds, channels and roles, and DMs on or off."""

    guild_ids: frozenset[int] = frozenset()
    channel_ids: frozenset[int] = frozenset()
    role_ids: frozenset[int] = frozenset()
    allow_dms: bool = True

    def admits(self, guild_id: int | None, channel_id: int | None, role_ids: list[int]) -> bool:
        """``channel_id`` is the parent channel for a thread; ``role_ids`` are the member's roles."""
        if guild_id is None:
            return self.allow_dms
        if self.guild_ids and guild_id not in self.guild_ids:
            return False
        if self.channel_ids and channel_id not in self.channel_ids:
            return False
        return not self.role_ids or any(role in self.role_ids for role in role_ids)
