"""The Discord adapter: mentions, uploads and slash commands become jobs; reply events become messages.

It only translates. It acknowledges Discord at once (typing indicator, deferred interactions), downloads
attachments itself while their URLs are fresh, and hands everything else to the workers through Redis.
The command tree is wired in bot/discord/slash_commands.py, 👍/👎 are recorded in bot/discord/feedback.py,
replies to jobs from before a restart are placed by bot/discord/late_replies.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import time
from typing import Any

import discord
from discord import app_commands

from bot.discord.dm_access import DmAccess
from bot.discord.feedback import record_feedback
from bot.discord.late_replies import late_reply
from bot.discord.links import SourceLinks
from bot.discord.live_models import LiveModels
from bot.discord.payloads import (
    Gate,
    attachment_job_id,
    interaction_job_id,
    is_pdf,
    make_job,
    message_job_id,
    parent_channel_id,
    question_of,
    scope_of,
    thread_name,
    thread_scope_for,
)
from bot.discord.replies import (
    MARKUP,
    NO_MENTIONS,
    AnswerReply,
    ChannelSurface,
    IngestBoard,
    InteractionSurface,
)
from bot.discord.settings import DiscordSettings, intents, invite_url, point_at
from bot.discord.slash_commands import CONTEXTS, INSTALLS, add_commands, may_set_dm_search
from bot.messages import PostedStore
from bot.pipeline import Reply, ReplyRouter
from bot.reply import NOT_A_FORMAT, QuietReply
from bot.tasks import TaskSet
from core.formats import ACCEPTED
from core.scope import Scope
from core.sizes import mb_from_bytes
from core.text_safety import escape_name, normalise_question
from jobs.client import JobClient
from jobs.interactions import AsyncRatings
from jobs.protocol import Job, JobKind, ReplyEvent
from telemetry import metrics

log = logging.getLogger(__name__)

HELP_TEXT = "Ask me a question after the mention, e.g. “@Phobos what does the contract say about notice?”"
CLOSE_TIMEOUT_S = 30.0  # how long close() waits for its tasks to end after cancelling them
DEFAULT_FILE_QUESTION = "What is this document about?"  # "Ask Phobos" on a message with only a file


class DiscordAdapter(discord.Client):
    """A discord.py client that turns Discord activity into Phobos jobs and shows the workers' replies."""

    def __init__(self, settings: DiscordSettings, jobs: JobClient, **client_options: Any):
        if settings.application_id is not None:
            client_options.setdefault("application_id", settings.application_id)
        super().__init__(intents=intents(), allowed_mentions=NO_MENTIONS, **client_options)
        self.settings = settings
        self.jobs = jobs
        self.links = SourceLinks(jobs.redis)
        self.ratings = AsyncRatings(jobs.redis, retention_days=settings.interaction_retention_days,
                                    max_entries=settings.interaction_max_entries)
        self.gate = Gate(settings.allowed_guild_ids, settings.allowed_channel_ids, settings.allowed_role_ids,
                         settings.allow_dms)
        self.dm_access = DmAccess(self, jobs.redis, self.gate)  # what a DM question reads
        self.models = LiveModels(jobs.redis)  # for /model's autocomplete
        self.tree = app_commands.CommandTree(self, allowed_installs=INSTALLS, allowed_contexts=CONTEXTS)
        add_commands(self.tree, self._command, self._ask_about_message, self.models.names)
        self.router = ReplyRouter(jobs, self._late_reply, reply_timeout_s=settings.reply_timeout_s)
        self._tasks = TaskSet()

    # ---- lifecycle -----------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        await self.jobs.start_listening()
        self._tasks.spawn(self.router.run())
        if self.application_id is not None:
            log.info("invite Phobos with %s", invite_url(self.application_id))
            print(f"Invite Phobos to a server: {invite_url(self.application_id)}", flush=True)
        if self.settings.sync_commands:
            await self._sync_commands()

    async def _sync_commands(self) -> None:
        # A guild sync shows up at once (development); a global one may take a while to reach clients.
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d slash commands (%s)", len(synced),
                 f"guild {self.settings.dev_guild_id}" if self.settings.dev_guild_id else "global")

    async def close(self) -> None:
        await self._tasks.close(CLOSE_TIMEOUT_S)
        await super().close()

    # ---- replies -------------------------------------------------------------------------------

    def _late_reply(self, event: ReplyEvent) -> AnswerReply | None:
        """A reply for a job from before a restart (bot/discord/late_replies.py)."""
        return late_reply(self, event, self.jobs.redis, self.links, self.settings.edit_interval_s)

    async def _submit(self, job: Job, view: Reply, blob: bytes | None = None) -> bool:
        """Submit ``job`` with its replies going to ``view`` (held until ``router.release(view)``).

        False (and nothing to show) for a duplicate.
        """
        if not self.router.expect(job.id, view, hold=True):
            return False  # the same event, delivered twice at once
        if await self.jobs.submit(job, blob=blob):
            return True
        self.router.forget(job.id)  # submitted before (a redelivered event): that delivery shows the reply
        return False

    # ---- messages ------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.user is None:  # other bots and Phobos itself
            return
        if not self._admits(message.guild, message.channel, message.author):
            return
        is_dm = message.guild is None
        is_mentioned = any(user.id == self.user.id for user in message.mentions)
        pdfs = [a for a in message.attachments if is_pdf(a)]
        others = [a for a in message.attachments if not is_pdf(a)]
        uploads: list[str] = []
        # Everyone's PDFs are indexed; other files are only worth a word when someone talks to Phobos.
        if pdfs or (others and (is_mentioned or is_dm)):
            uploads = await self._ingest(message, pdfs, others)
        if not (is_mentioned or is_dm):
            return
        question = question_of(message.content, self.user.id)
        if question:
            await self._ask(message, question, after=uploads)
        elif not message.attachments:
            await message.reply(HELP_TEXT, mention_author=False, allowed_mentions=NO_MENTIONS)

    def _admits(self, guild: discord.Guild | None, channel: object, user: discord.abc.User) -> bool:
        role_ids = [role.id for role in user.roles] if isinstance(user, discord.Member) else []
        return self.gate.admits(guild.id if guild else None, parent_channel_id(channel), role_ids)

    async def _scope_of(self, message: discord.Message) -> Scope:
        """The message's scope; a thread the client has not cached is fetched to learn its parent channel."""
        channel: object = message.channel
        if isinstance(channel, discord.PartialMessageable) and message.guild is not None:
            try:
                channel = await self.fetch_channel(channel.id)
            except discord.HTTPException as exc:
                log.warning("cannot look up channel %s (%s); scoping by its id", channel.id, exc)
        return scope_of(channel, message.guild.id if message.guild else None)

    async def _ingest(self, message: discord.Message, pdfs: list[discord.Attachment],
                      others: list[discord.Attachment]) -> list[str]:
        """Index the message's files, one status board under it; the submitted ingest job ids."""
        scope = await self._scope_of(message)
        board = IngestBoard(ChannelSurface(message.channel, reference=message,
                                           interval_s=self.settings.edit_interval_s))
        for attachment in others:
            board.fail(escape_name(attachment.filename), NOT_A_FORMAT)
        limit_mb = self.settings.max_attachment_mb
        for attachment in pdfs:
            name = escape_name(attachment.filename)  # shown, linked and stored under this one name
            if attachment.size > self.settings.max_attachment_bytes:
                board.fail(name,
                           f"is {mb_from_bytes(attachment.size):.1f} MB; the limit here is {limit_mb:g} MB.")
                continue
            try:
                # Now, not later: Discord's attachment URLs expire.
                data = await attachment.read()
            except discord.HTTPException as exc:
                metrics.platform_error("discord", exc)
                board.fail(name, f"could not be downloaded from Discord ({exc.status}); "
                                 "please upload it again.")
                continue
            job = make_job(attachment_job_id(message.id, attachment.id), JobKind.INGEST, scope,
                           message.author.id, self.jobs.reply_stream, file_name=name,
                           channel_id=message.channel.id, message_id=message.id)
            await self.links.remember(scope, name, message.jump_url)
            self.router.ended(job.id)  # before submitting: the index may be ready quickly
            if await self._submit(job, board, blob=data):
                board.add(job.id, name)
        if not board.has_lines:
            return []
        await board.show_now()
        self.router.release(board)
        return board.job_ids

    async def _ask(self, message: discord.Message, question: str, after: list[str]) -> None:
        question = normalise_question(question)  # it also names the thread
        with contextlib.suppress(discord.HTTPException):
            await message.channel.typing()  # shows at once; the answer message follows
        await self.router.wait_for_uploads(after)
        scope = await self._scope_of(message)
        opens_thread = (self.settings.thread_on_channel_question
                        and isinstance(message.channel, discord.TextChannel))
        if opens_thread:
            # The conversation continues in the thread, so the question already belongs to it.
            scope = thread_scope_for(message.id, scope)
        job = make_job(message_job_id(message.id), JobKind.ASK, scope, message.author.id,
                       self.jobs.reply_stream, text=question, channel_id=message.channel.id,
                       message_id=message.id, thread_id=message.id if opens_thread else None)
        if message.guild is None:  # a DM: also the guild channels the asker can read now, and no other
            reads = await self.dm_access.reads(message.author.id)
            job = dataclasses.replace(job, reads=reads.scope_keys, channel_names=reads.channel_names)
        surface = ChannelSurface(message.channel, reference=message, interval_s=self.settings.edit_interval_s,
                                 store=PostedStore(self.jobs.redis, job.id))
        view = AnswerReply(surface, MARKUP, links=self.links.for_answer(scope), is_rated=True)
        if not await self._submit(job, view):
            return
        if opens_thread:
            try:
                thread = await message.create_thread(name=thread_name(question))
                surface.channel, surface.reference = thread, None
            except discord.HTTPException as exc:
                log.info("no thread for message %s (%s); answering in the channel", message.id, exc)
        await view.show_placeholder()
        self.router.release(view)

    # ---- 👍/👎 ---------------------------------------------------------------------------------

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Button clicks and the reason modal's submission (bot/discord/feedback.py); slash commands are the
        command tree's."""
        await record_feedback(interaction, self.ratings)

    # ---- slash commands ------------------------------------------------------------------------

    async def _command(self, interaction: discord.Interaction, kind: JobKind, text: str) -> None:
        """A slash command (bot/discord/slash_commands.py): acknowledged at once, its job submitted."""
        if not self._admits(interaction.guild, interaction.channel, interaction.user):
            await interaction.response.send_message("Phobos is not enabled here.", ephemeral=True)
            return
        if kind is JobKind.DM_SEARCH and not await may_set_dm_search(interaction):
            return
        deadline = await self._defer(interaction)
        await self._answer(interaction, deadline, kind, text, scope_of(interaction.channel, interaction.guild_id))

    async def _ask_about_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """"Ask Phobos" on a message: its text is the question; a supported file on it is shared first
        (into the conversation where the command is used), so the answer can cite it."""
        if not self._admits(interaction.guild, interaction.channel, interaction.user):
            await interaction.response.send_message("Phobos is not enabled here.", ephemeral=True)
            return
        question = question_of(message.content, self.user.id if self.user else 0)
        files = [a for a in message.attachments if is_pdf(a)]
        if not question and not files:
            await interaction.response.send_message(
                f"That message has no question and no file I read ({ACCEPTED}).", ephemeral=True)
            return
        deadline = await self._defer(interaction)
        scope = scope_of(interaction.channel, interaction.guild_id)
        uploads = await self._share_quietly(message, files, scope, interaction.user.id)
        await self._answer(interaction, deadline, JobKind.ASK, question or DEFAULT_FILE_QUESTION, scope,
                           after=uploads)

    async def _defer(self, interaction: discord.Interaction) -> float:
        """Acknowledge at once (Discord wants an answer within 3 seconds); the monotonic deadline of its token."""
        received_at = time.monotonic()
        try:
            await interaction.response.defer(thinking=True)
        except discord.NotFound:
            log.warning("interaction %s expired before the defer; answering in the channel", interaction.id)
            return received_at  # the token is useless: every reply goes to the channel
        return received_at + self.settings.interaction_token_ttl_s

    async def _answer(self, interaction: discord.Interaction, deadline: float, kind: JobKind, text: str,
                      scope: Scope, after: list[str] | None = None) -> None:
        """Submit the interaction's job (once the files it came with are indexed) and show its reply there."""
        await self.router.wait_for_uploads(after or [])
        job = make_job(interaction_job_id(interaction.id), kind, scope, interaction.user.id,
                       self.jobs.reply_stream, text=text, channel_id=interaction.channel_id or 0)
        if interaction.guild_id is None and kind in (JobKind.ASK, JobKind.DOCS):  # read as a DM message reads
            reads = await self.dm_access.reads(interaction.user.id)
            job = dataclasses.replace(job, reads=reads.scope_keys, channel_names=reads.channel_names)
        surface = InteractionSurface(interaction, deadline=deadline, interval_s=self.settings.edit_interval_s)
        view = AnswerReply(surface, MARKUP, links=self.links.for_answer(scope), is_rated=kind is JobKind.ASK)
        if await self._submit(job, view):
            self.router.release(view)

    async def _share_quietly(self, message: discord.Message, files: list[discord.Attachment], scope: Scope,
                             user_id: int) -> list[str]:
        """Index ``files`` into ``scope`` with no status message of their own (the answer follows them;
        where Phobos is installed only to the user it could not post one anyway)."""
        submitted = []
        for attachment in files:
            if attachment.size > self.settings.max_attachment_bytes:
                continue
            try:
                data = await attachment.read()
            except discord.HTTPException as exc:
                metrics.platform_error("discord", exc)
                continue
            name = escape_name(attachment.filename)  # shown, linked and stored under this one name
            job = make_job(attachment_job_id(message.id, attachment.id), JobKind.INGEST, scope, user_id,
                           self.jobs.reply_stream, file_name=name, channel_id=message.channel.id,
                           message_id=message.id)
            await self.links.remember(scope, name, message.jump_url)
            self.router.ended(job.id)
            if await self._submit(job, QuietReply(), blob=data):
                self.router.release_job(job.id)
                submitted.append(job.id)
            elif self.router.is_pending(job.id):
                submitted.append(job.id)  # already shared by the message itself: the answer waits for that
        return submitted


def adapter_id() -> str:
    """The reply stream's name: stable across restarts, so replies to jobs from before one still arrive."""
    return f"discord-{socket.gethostname()}"


async def serve(settings: DiscordSettings, jobs: JobClient, **client_options: Any) -> None:
    """Run the adapter until it is closed; prints the invite URL once Discord says who we are."""
    point_at(settings)
    adapter = DiscordAdapter(settings, jobs, **client_options)
    try:
        async with adapter:
            await adapter.start(settings.token.get_secret_value())
    except discord.LoginFailure as exc:
        raise SystemExit("Discord refused DISCORD_TOKEN; copy the bot token again (docs/discord.md)") from exc
    except discord.PrivilegedIntentsRequired as exc:
        raise SystemExit("Turn on the Message Content Intent for this bot in the Discord developer portal "
                         "(Bot tab → Privileged Gateway Intents); see docs/discord.md.") from exc

