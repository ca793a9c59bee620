"""The Slack adapter: Slack events and /phobos become jobs; reply events become Slack messages.

It only translates. A mention, a DM or a slash command becomes a :class:`Job` whose id comes from the
Slack message (so a retried event is the same job); a shared PDF is downloaded with the bot token and
handed to the workers as bytes (bot/slack/shares.py). Replies come back on this adapter's stream and are
shown by :class:`bot.slack.replies.ReplyRouter`. The /phobos text is parsed in bot/slack/slash_command.py,
payload fields are read in bot/slack/payloads.py, the Web API client is built in bot/slack/web_client.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncAssistant, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.budget import Budgets
from bot.pipeline import ReplyRouter
from bot.ratelimits import RateGate
from bot.ratings import record_rating
from bot.slack.assistant import (
    GREETING,
    LOADING_MESSAGES,
    RedisThreadContextStore,
    is_member,
    started_thread,
    suggested_prompts,
    take_title,
    title_of,
)
from bot.slack.feedback import RATE_ACTION_ID, REASON_VIEW_ID, parse_rating, reason_modal, submitted_reason
from bot.slack.membership import MEMBER_EVENTS, WORKSPACE_EVENTS, MembershipUnavailable, SlackMembership
from bot.slack.payloads import PLATFORM, rater_of, sender_of, strip_mention, workspace_of
from bot.slack.permalinks import PermalinkStore
from bot.slack.replies import VIA_CHAT, VIA_RESPONSE_URL, Route, escape, make_reply_factory
from bot.slack.settings import SlackSettings
from bot.slack.shares import SharedFiles
from bot.slack.slash_command import SLASH_COMMAND, parse_command
from bot.slack.surfaces import StreamSupport, gated
from bot.slack.web_client import web_client
from bot.tasks import TaskSet
from core.scope import Scope
from jobs.client import JobClient
from jobs.interactions import BAD, AsyncRatings
from jobs.protocol import Job, JobKind
from jobs.reads import Reads
from telemetry import metrics

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 30.0  # how long close() waits for its tasks to end after cancelling them

# Message subtypes that carry something a person said or shared; edits, deletions, joins, bot posts
# (including the message_changed events our own chat.update calls cause) are ignored.
HANDLED_MESSAGE_SUBTYPES = (None, "file_share", "thread_broadcast")


class SlackAdapter:
    """A bolt AsyncApp whose listeners submit jobs, plus the router that shows the replies."""

    def __init__(self, settings: SlackSettings, job_client: JobClient):
        self.settings = settings
        self.job_client = job_client
        self.permalinks = PermalinkStore(job_client.redis)
        self.gate = RateGate()  # 429s per method and workspace, shared by every reply
        self.streams = StreamSupport(settings.native_streaming)
        self.client = web_client(settings, self.gate)
        self.app = AsyncApp(client=self.client, signing_secret=settings.signing_secret.get_secret_value(),
                            name="phobos")
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.command(SLASH_COMMAND)(self._on_command)
        self.app.action(RATE_ACTION_ID)(self._on_rate)
        self.app.view(REASON_VIEW_ID)(self._on_reason)
        # The AI app pane: bolt's Assistant takes the pane's events before the plain message listener.
        self.pane_contexts = RedisThreadContextStore(job_client.redis)
        assistant = AsyncAssistant(thread_context_store=self.pane_contexts)
        assistant.thread_started(self._on_pane_started)
        assistant.user_message(self._on_pane_message)
        self.app.assistant(assistant)
        # A DM question reads the asker's channels (bot/slack/membership.py); these events keep that fresh.
        self.membership = SlackMembership(self.client, job_client.redis, settings.membership_ttl_s)
        for name in (*MEMBER_EVENTS, *WORKSPACE_EVENTS):
            self.app.event(name)(self._on_membership_event)
        self.ratings = AsyncRatings(job_client.redis, retention_days=settings.interaction_retention_days,
                                    max_entries=settings.interaction_max_entries)
        self.http_port: int | None = None  # the bound port in HTTP mode, once started
        self._http: aiohttp.ClientSession | None = None
        self._router: ReplyRouter | None = None
        self._router_task: asyncio.Task[None] | None = None
        self._shared_files: SharedFiles | None = None  # needs the router and the HTTP session: made in start()
        self._tasks = TaskSet()
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None

    # ---- lifecycle

    async def start(self) -> None:
        """Listen for replies, then open the Socket Mode connection or the HTTP endpoint."""
        self._http = aiohttp.ClientSession()
        await self.job_client.start_listening()
        budgets = Budgets(self.settings.edits_per_min, self.settings.update_interval_s)
        append_budgets = Budgets(self.settings.appends_per_min, self.settings.update_interval_s)
        make_reply = make_reply_factory(self.client, self._http, self.permalinks, budgets,
                                        limit=self.settings.message_limit,
                                        update_interval_s=self.settings.update_interval_s, gate=self.gate,
                                        append_budgets=append_budgets, streams=self.streams)
        self._router = ReplyRouter(self.job_client, make_reply, reply_timeout_s=self.settings.reply_timeout_s)
        self._router_task = asyncio.create_task(self._router.run())
        self._shared_files = SharedFiles(self.settings, self.job_client, self.client, self.permalinks, self._http,
                                         self._router, self._post)
        if self.settings.mode == "socket":
            self._socket = AsyncSocketModeHandler(self.app, self.settings.app_token.get_secret_value(),
                                                  web_client=self.client)
            await self._socket.connect_async()
        else:
            self._runner = web.AppRunner(self.app.web_app(path=self.settings.http_path))
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
            await site.start()
            self.http_port = self._runner.addresses[0][1]
            log.info("Slack adapter listening on http://%s:%d%s", self.settings.http_host, self.http_port,
                     self.settings.http_path)
        log.info("Slack adapter up (%s mode, API %s)", self.settings.mode, self.settings.api_url)

    async def close(self) -> int:
        """Stop listening, cancel every task and wait for them, at most CLOSE_TIMEOUT_S. Returns how many
        tasks had not stopped by then (0 on a clean shutdown)."""
        if self._socket is not None:
            await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        stuck = await self._tasks.close(CLOSE_TIMEOUT_S, self._router_task)
        if self._http is not None:
            await self._http.close()
        return stuck

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # ---- listeners

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any],
                          context: AsyncBoltContext) -> None:
        """@Phobos in a channel or thread: index any PDFs on the message, then ask in the thread's scope.

        A top-level mention is answered in a new thread under it, and that thread is the question's
        scope (as on Discord): follow-ups there keep its memory, and the channel's documents are
        still searched. PDFs on the message belong to where they were shared.
        """
        team, channel, ts = workspace_of(body), event["channel"], event["ts"]
        thread_ts = event.get("thread_ts")
        shared_scope = Scope(PLATFORM, team, channel, thread_ts)
        answer_thread = thread_ts or ts
        ingests = await self._ingest_files(event, shared_scope, answer_thread)
        question = strip_mention(event.get("text", ""), context.bot_user_id)
        if question:
            scope = Scope(PLATFORM, team, channel, answer_thread)
            route = Route(VIA_CHAT, channel, scope.key, thread_ts=answer_thread)
            self._after(ingests, self._ask(f"slack:{team}:{channel}:{ts}", scope, sender_of(event),
                                           question, route))
        elif not event.get("files"):
            await self._post(channel, answer_thread, "Ask me a question after the mention, or try `/phobos`.")

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any],
                          context: AsyncBoltContext) -> None:
        """Shared PDFs anywhere the bot is a member; in a DM, any message is also a question."""
        if event.get("subtype") not in HANDLED_MESSAGE_SUBTYPES or event.get("bot_id"):
            return
        team, channel, ts = workspace_of(body), event["channel"], event["ts"]
        thread_ts = event.get("thread_ts")
        scope = Scope(PLATFORM, team, channel, thread_ts)
        is_dm = event.get("channel_type") == "im"
        # A DM is answered where it was said; a file's status goes in a thread under the file.
        ingests = await self._ingest_files(event, scope, thread_ts or ("" if is_dm else ts), is_addressed=is_dm)
        question = strip_mention(event.get("text", ""), context.bot_user_id)
        if is_dm and question:
            self._after(ingests, self._ask(f"slack:{team}:{channel}:{ts}", scope, sender_of(event),
                                           question, Route(VIA_CHAT, channel, scope.key,
                                                           thread_ts=thread_ts or ""),
                                           dm_user=str(event.get("user") or "")))

    async def _on_membership_event(self, body: dict[str, Any], event: dict[str, Any],
                                   context: AsyncBoltContext) -> None:
        """Someone joined or left a channel, or a channel closed: drop the memberships it makes stale."""
        await self.membership.on_event(workspace_of(body), event, context.bot_user_id)

    async def _on_pane_started(self, body: dict[str, Any], payload: dict[str, Any]) -> None:
        """A thread opens in the pane: greet, and suggest questions about the channel the user views."""
        _user, channel, thread_ts, viewed = started_thread(payload)
        team = workspace_of(body)
        if viewed:
            await self.pane_contexts.save(channel_id=channel, thread_ts=thread_ts,
                                          context={"channel_id": viewed, "team_id": team})
        prompts = await suggested_prompts(self.job_client.redis, team, viewed if viewed else "")
        try:  # a greeting is a courtesy: a refused one must not keep the thread from working
            await self._post(channel, thread_ts, GREETING)
            await gated(self.gate, team, "assistant.threads.setSuggestedPrompts",
                        lambda: self.client.assistant_threads_setSuggestedPrompts(
                            channel_id=channel, thread_ts=thread_ts, title="Try asking", prompts=prompts))
        except SlackApiError as exc:
            metrics.platform_error("slack", exc)
            log.info("could not greet in the pane: %s", exc.response.get("error"))

    async def _on_pane_message(self, body: dict[str, Any], payload: dict[str, Any],
                               context: AsyncBoltContext) -> None:
        """A question in a pane thread: title the thread, show a status, ask in the viewed channel's scope
        when the asker is a member of it (else in the pane thread's own), and stream the answer there."""
        event = payload
        team, channel, ts, thread_ts = workspace_of(body), event["channel"], event["ts"], event["thread_ts"]
        user = sender_of(event)
        own_scope = Scope(PLATFORM, team, channel, thread_ts)
        ingests = await self._ingest_files(event, own_scope, thread_ts)
        question = strip_mention(event.get("text", ""), context.bot_user_id)
        if not question:
            return
        if await take_title(self.job_client.redis, channel, thread_ts):
            await gated(self.gate, team, "assistant.threads.setTitle", lambda: self.client.assistant_threads_setTitle(
                channel_id=channel, thread_ts=thread_ts, title=title_of(question)))
        await gated(self.gate, team, "assistant.threads.setStatus", lambda: self.client.assistant_threads_setStatus(
            channel_id=channel, thread_ts=thread_ts, status="is looking through the documents…",
            loading_messages=LOADING_MESSAGES))
        scope = own_scope
        viewed = await self.pane_contexts.find(channel_id=channel, thread_ts=thread_ts)
        if viewed is not None and user and await is_member(self.client, viewed.channel_id, user):
            scope = Scope(PLATFORM, team, viewed.channel_id)
        route = Route(VIA_CHAT, channel, scope.key, thread_ts=thread_ts, assistant="1")
        # The pane is the asker's DM with the app: it reads every channel they read, as a DM does.
        self._after(ingests, self._ask(f"slack:{team}:{channel}:{ts}", scope, user, question, route, dm_user=user))

    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        """/phobos SUBCOMMAND ...: acked at once; the answer comes by response_url or in the channel."""
        parsed = parse_command(command.get("text", ""))
        if isinstance(parsed, str):  # usage, or a hint: nothing to run
            await ack(text=parsed)
            return
        await ack()
        kind, is_public, rest = parsed.kind, parsed.is_public, parsed.text
        team, channel, user = workspace_of(command), command["channel_id"], command["user_id"]
        scope = Scope(PLATFORM, team, channel)  # slash commands carry no thread
        response_type = "in_channel" if is_public else "ephemeral"
        if kind is JobKind.ASK:
            # Stream the answer into the channel like a mention; response_url is the fallback where the
            # bot is not a member.
            route = Route(VIA_CHAT, channel, scope.key, response_url=command["response_url"],
                          response_type=response_type, header=f"<@{user}> asked: _{escape(rest)}_",
                          kind=JobKind.ASK.value)
        else:
            route = Route(VIA_RESPONSE_URL, channel, scope.key, response_url=command["response_url"],
                          response_type=response_type)
        # /phobos ask and docs in a DM read (and list) the asker's channels, as a DM message does.
        is_dm = command.get("channel_name") == "directmessage" and kind in (JobKind.ASK, JobKind.DOCS)
        reads = await self._dm_reads(scope, user, route) if is_dm else Reads()
        job = Job(id=f"slack:{team}:{channel}:cmd:{command['trigger_id']}", kind=kind, scope=scope, user=user,
                  reply_to=self.job_client.reply_stream, text=rest, meta=route.to_meta(), reads=reads.scope_keys,
                  channel_names=reads.channel_names)
        await self.job_client.submit(job)

    async def _post(self, channel: str, thread_ts: str, text: str) -> None:
        """A one-off message, under the channel's posting limit like every answer."""
        await gated(self.gate, channel, "chat.postMessage", lambda: self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts or None, text=text))

    # ---- 👍/👎

    async def _on_rate(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A 👍/👎 click on the feedback buttons: acked at once, recorded; a 👎 opens the "what was wrong?" modal."""
        await ack()
        parsed = parse_rating(str(action.get("value", "")))
        if parsed is None:
            return
        rating, job_id = parsed
        await record_rating(self.ratings, PLATFORM, job_id, rating, rater_of(body))
        if rating == BAD and body.get("trigger_id"):
            channel = str((body.get("channel") or {}).get("id", ""))
            try:
                await self.client.views_open(trigger_id=body["trigger_id"], view=reason_modal(job_id, channel))
            except SlackApiError as exc:  # expired_trigger_id: the 👎 is kept without a reason
                metrics.platform_error("slack", exc)
                log.info("could not ask what was wrong: %s", exc.response.get("error"))

    async def _on_reason(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The modal's submission: the 👎 is recorded again, now with its reason."""
        await ack()
        job_id, reason = submitted_reason(view)
        if job_id and reason.strip():
            await record_rating(self.ratings, PLATFORM, job_id, BAD, rater_of(body), reason, is_new=False)

    # ---- jobs

    async def _ask(self, job_id: str, scope: Scope, user: str, question: str, route: Route,
                   dm_user: str = "") -> None:
        """Submit the question; from a DM (``dm_user``), with the channels that person reads now."""
        route = dataclasses.replace(route, kind=JobKind.ASK.value, user=user)
        reads = await self._dm_reads(scope, dm_user, route) if dm_user else Reads()
        job = Job(id=job_id, kind=JobKind.ASK, scope=scope, user=user, reply_to=self.job_client.reply_stream,
                  text=question, meta=route.to_meta(), reads=reads.scope_keys, channel_names=reads.channel_names)
        await self.job_client.submit(job)

    async def _dm_reads(self, scope: Scope, user: str, route: Route) -> Reads:
        """The channels ``user`` reads now; when Slack cannot say, none (the DM's own documents only), said so."""
        if not self.settings.dm_search:
            return Reads()
        try:
            return await self.membership.reads(scope.workspace, user)
        except MembershipUnavailable as exc:
            metrics.platform_error("slack", exc)
            log.warning("cannot look up the channels of %s in %s: %s", user, scope.workspace, exc)
            await self._post(route.channel, route.thread_ts,
                             f"I could not check which channels you are in (Slack said: {escape(str(exc))}), so "
                             "this answer uses only the documents shared in this conversation.")
            return Reads()

    def _after(self, ingests: list[str], ask: Coroutine[Any, Any, None]) -> None:
        """Run ``ask`` once the ``ingests`` it came with are indexed (at once without any)."""
        async def wait_then_ask() -> None:
            assert self._router is not None
            await self._router.wait_for_uploads(ingests)
            await ask

        self._tasks.spawn(wait_then_ask())

    async def _ingest_files(self, event: Mapping[str, Any], scope: Scope, status_thread: str,
                            is_addressed: bool = True) -> list[str]:
        """Submit each document on the message for indexing in ``scope`` (bot/slack/shares.py); the job ids."""
        assert self._shared_files is not None, "start() the adapter first"
        return await self._shared_files.ingest(event, scope, status_thread, is_addressed)


def adapter_id() -> str:
    """The reply stream's name, one per host (as for Discord); run one Slack adapter per host."""
    return f"slack-{socket.gethostname()}"


async def serve(settings: SlackSettings, jobs: JobClient) -> None:
    """Run the Slack adapter until cancelled: the entry point for ``phobos slack``."""
    await SlackAdapter(settings, jobs).serve_forever()
