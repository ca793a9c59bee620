"""A local fake of Discord: enough REST and gateway for the real discord.py client to run against it.

It speaks the wire protocol, not discord.py's objects: one aiohttp app serves the REST routes the
adapter uses under ``/api/v10`` and the gateway websocket under ``/gateway``, and records every
request so tests can assert on what Discord would have received. Tests drive it as a user would:
:meth:`FakeDiscord.post_message` and :meth:`FakeDiscord.slash_command` push gateway events.

It is strict where Discord is: message content over 2,000 characters answers 400 / code 50035; an
interaction not acknowledged within 3 s is gone (404 / 10062 Unknown interaction, for its token too);
an interaction token older than 15 minutes (``interaction_token_ttl_s``, shrinkable per test) answers
401 / 50027 Invalid Webhook Token; message components are checked (at most 5 action rows of at most
5 buttons, custom_id at most 100 characters), a button click is possible only on a button a message
shows, a modal (callback type 9) must have a title of at most 45 characters and 1 to 5 rows of one
text input each, cannot answer a modal submission, and can be submitted only once it was opened;
message edits are rate limited per channel (``edit_calls`` per
``edit_window_s``) with a 429 carrying ``retry_after`` JSON, ``Retry-After`` and ``X-RateLimit-*``
headers, counted in :attr:`FakeDiscord.rate_limited`.

Application commands are offered where Discord offers them
(https://discord.com/developers/docs/interactions/application-commands#interaction-contexts): a command
reaches a user only in the contexts it lists (``contexts``: 0 guild, 1 the bot's DM, 2 other DMs and
group DMs; all three when absent) and through the installs it lists (``integration_types``: 0 guild,
1 user; guild only when absent); :meth:`FakeDiscord.slash_command` and
:meth:`FakeDiscord.message_command` refuse to deliver one Discord would not offer. A message command
(type 3) carries its target in ``data.target_id`` and ``data.resolved.messages``
(https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-resolved-data-structure).
In a DM or group DM of users (context 2, :meth:`FakeDiscord.private_channel`) the bot is not a member:
it can answer through the interaction only, and a channel message there answers 403 / 50001 Missing Access.

For DM questions it holds several guilds (:meth:`FakeDiscord.add_guild`), who is a member of which with
which roles (:meth:`FakeDiscord.join`), roles' permissions and channels' permission overwrites (changed
through :meth:`FakeDiscord.set_overwrite`, which sends CHANNEL_UPDATE as Discord does), and serves
``GET /guilds/{guild}/members/{user}``: 401 without the bot token, 404 / 10004 Unknown Guild for a guild
the bot is not in, 404 / 10007 Unknown Member for someone who is not a member, and a per-guild bucket
(``member_calls`` per ``member_window_s``) answered with 429 past it, as for edits.

Point discord.py at it with :meth:`FakeDiscord.patch_discord_py` (class attributes, restored by
pytest's ``monkeypatch``): ``discord.http.Route.BASE`` for REST and
``DiscordWebSocket.DEFAULT_GATEWAY`` for the websocket (discord.py 2.7 connects there directly).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import yarl
from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
HEARTBEAT_INTERVAL_MS = 45_000
API_PREFIX = "/api/v10"
BOT_TOKEN = "fake-bot-token"
APPLICATION_ID = 900_000_000_000_000_001
BOT_USER_ID = APPLICATION_ID

_SNOWFLAKE_COUNTER = itertools.count(1)  # shared by every instance, so ids never repeat in a test run
# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_HELLO, OP_HEARTBEAT_ACK = 0, 1, 2, 10, 11
# Channel types.
GUILD_TEXT, DM, GROUP_DM, PUBLIC_THREAD, PRIVATE_THREAD = 0, 1, 3, 11, 12
# Installs and contexts a command may be offered in; application command types.
GUILD_INSTALL, USER_INSTALL = 0, 1
CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL = 0, 1, 2
CHAT_INPUT, MESSAGE_COMMAND = 1, 3
# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY, MANAGE_GUILD = 1 << 10, 1 << 11, 1 << 16, 1 << 5
READER = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY
MEMBER_CALLS, MEMBER_WINDOW_S = 10, 10.0  # member lookups per guild per window
# Interaction types and the callback types the adapter may answer with.
APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, AUTOCOMPLETE_RESULT, MODAL = 4, 5, 8, 9
EPHEMERAL = 64  # message flag: shown only to the user who interacted
ACTION_ROW, BUTTON, TEXT_INPUT = 1, 2, 4  # component types
CUSTOM_ID_CHARS, ROWS, ROW_BUTTONS, MODAL_TITLE_CHARS, LABEL_CHARS = 100, 5, 5, 45, 45
MESSAGE_CHARS = 2000  # Discord's limit on a message's content
ACK_DEADLINE_S = 3.0  # an interaction must be acknowledged this soon
INTERACTION_TOKEN_TTL_S = 15 * 60
EDIT_CALLS, EDIT_WINDOW_S = 5, 5.0  # message edits per channel per window (Discord's usual bucket)


class _DiscordError(Exception):
    def __init__(self, status: int, message: str, code: int, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.errors = status, message, code, errors


class _RateLimited(Exception):
    def __init__(self, bucket: str, retry_after_s: float, limit: int):
        super().__init__(bucket)
        self.bucket, self.retry_after_s, self.limit = bucket, retry_after_s, limit


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py decodes a body only when Content-Type is exactly application/json (no charset).
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def _check_content(body: Any) -> None:
    content = (body or {}).get("content") or ""
    if len(content) > MESSAGE_CHARS:
        raise _DiscordError(400, "Invalid Form Body", 50035, {"content": {"_errors": [
            {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {MESSAGE_CHARS} or fewer in length."}]}})


def _invalid(field_name: str, message: str) -> _DiscordError:
    return _DiscordError(400, "Invalid Form Body", 50035, {field_name: {"_errors": [
        {"code": "BASE_TYPE_INVALID", "message": message}]}})


def _check_components(body: Any) -> None:
    rows = (body or {}).get("components") or []
    if len(rows) > ROWS:
        raise _invalid("components", f"Must be {ROWS} or fewer in length.")
    for row in rows:
        buttons = row.get("components") or []
        if row.get("type") != ACTION_ROW or not buttons or len(buttons) > ROW_BUTTONS:
            raise _invalid("components", "An action row holds 1 to 5 buttons.")
        for button in buttons:
            if button.get("type") != BUTTON or not 1 <= len(button.get("custom_id", "")) <= CUSTOM_ID_CHARS:
                raise _invalid("components", "custom_id must be 1 to 100 characters.")


def _check_modal(data: dict[str, Any]) -> None:
    rows = data.get("components") or []
    if not 1 <= len(data.get("title", "")) <= MODAL_TITLE_CHARS:
        raise _invalid("data.title", "Must be between 1 and 45 in length.")
    if not 1 <= len(data.get("custom_id", "")) <= CUSTOM_ID_CHARS or not 1 <= len(rows) <= ROWS:
        raise _invalid("data", "A modal needs a custom_id and 1 to 5 rows.")
    for row in rows:
        inputs = row.get("components") or []
        if (row.get("type") != ACTION_ROW or len(inputs) != 1 or inputs[0].get("type") != TEXT_INPUT
                or not 1 <= len(inputs[0].get("label", "")) <= LABEL_CHARS
                or inputs[0].get("max_length", 1) > 4000):
            raise _invalid("data.components", "Each row holds one text input with a label of 1 to 45.")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the /api/v10 prefix and without the query string
    query: dict[str, str]
    json: Any
    at: float  # time.monotonic() when it arrived


@dataclass
class FakeMessage:
    """A message as the fake stores it; ``history`` is every content it has had, oldest first."""

    payload: dict[str, Any]
    history: list[str] = field(default_factory=list)
    edit_times: list[float] = field(default_factory=list)  # time.monotonic() of each edit

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def content(self) -> str:
        return str(self.payload["content"])

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])


@dataclass
class FakeInteraction:
    payload: dict[str, Any]
    dispatched_at: float = field(default_factory=time.monotonic)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # bodies POSTed to /callback
    original: FakeMessage | None = None  # the response message, once there is one
    modal: dict[str, Any] | None = None  # the modal this interaction opened (callback type 9)
    followups: list[FakeMessage] = field(default_factory=list)


class FakeDiscord:
    """One guild with two text channels, a bot user, and the people who talk in them.

    The guild, channels and role get fresh ids per instance, so tests sharing one Redis and one worker
    never share a scope.
    """

    def __init__(self) -> None:
        self.guild_id, self.channel_id, self.role_id = self.snowflake(), self.snowflake(), self.snowflake()
        self.other_channel_id = self.snowflake()
        self.dm_channel_id = self.snowflake()  # any channel id the guild does not have is a DM
        self.requests: list[RecordedRequest] = []
        self.messages: dict[int, FakeMessage] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.interactions: dict[str, FakeInteraction] = {}  # by token
        self.attachments: dict[str, bytes] = {}  # by URL path
        self.synced_commands: dict[str, list[dict[str, Any]]] = {}  # by PUT path
        self.closed_to_bot: set[int] = set()  # DMs and group DMs of users: the bot may not post there
        self.identified = asyncio.Event()
        self.ack_deadline_s = ACK_DEADLINE_S
        self.interaction_token_ttl_s: float = INTERACTION_TOKEN_TTL_S
        self.edit_calls, self.edit_window_s = EDIT_CALLS, EDIT_WINDOW_S
        self.rate_limited = 0  # 429s answered
        self.refused: list[tuple[RecordedRequest, int]] = []  # requests answered with an error code
        self._edits: dict[str, collections.deque[float]] = {}  # bucket -> times of recent edits
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.bot_user = self.user_payload(BOT_USER_ID, "Phobos", bot=True)
        self.guilds: dict[int, dict[str, Any]] = {}  # every guild the bot is in, by id
        self.members: dict[tuple[int, int], list[int]] = {}  # (guild, user) -> role ids
        self.member_calls, self.member_window_s = MEMBER_CALLS, MEMBER_WINDOW_S
        self.guild = self._make_guild(self.guild_id, "Fake guild", [(self.channel_id, "papers"),
                                                                    (self.other_channel_id, "other")],
                                      roles=[(self.role_id, "readers", VIEW_CHANNEL)], everyone=VIEW_CHANNEL)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{path:.*}", self._download_attachment)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for socket in list(self._sockets):
            with contextlib.suppress(Exception):
                await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def patch_discord_py(self, monkeypatch: Any) -> None:
        """Point discord.py's REST base and default gateway at this fake for the current test."""
        import discord.gateway
        import discord.http

        monkeypatch.setattr(discord.http.Route, "BASE", self.base_url + API_PREFIX)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY",
                            yarl.URL(self.base_url.replace("http", "ws", 1) + "/gateway"))

    # ---- payload builders ----------------------------------------------------------------------

    def snowflake(self) -> int:
        """A fresh id whose timestamp is now, like Discord's."""
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_SNOWFLAKE_COUNTER) & 0xFFF)

    @staticmethod
    def user_payload(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
        return {"id": str(user_id), "username": name, "global_name": name, "discriminator": "0",
                "avatar": None, "bot": bot}

    def _make_guild(self, guild_id: int, name: str, channels: list[tuple[int, str]],
                    roles: list[tuple[int, str, int]], everyone: int) -> dict[str, Any]:
        """A guild with text ``channels`` (id, name), ``roles`` (id, name, permissions) and @everyone's
        permissions; the bot is a member (with no role) and the guild's owner is user 1."""
        def text_channel(channel_id: int, channel_name: str, position: int) -> dict[str, Any]:
            return {"id": str(channel_id), "type": GUILD_TEXT, "name": channel_name, "position": position,
                    "permission_overwrites": [], "guild_id": str(guild_id), "parent_id": None,
                    "nsfw": False, "topic": None, "rate_limit_per_user": 0, "last_message_id": None}

        def role(role_id: int, role_name: str, permissions: int, position: int) -> dict[str, Any]:
            return {"id": str(role_id), "name": role_name, "permissions": str(permissions), "position": position,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}

        guild = {
            "id": str(guild_id), "name": name, "icon": None, "owner_id": "1",
            "unavailable": False, "member_count": 3, "large": False, "features": [], "emojis": [],
            "stickers": [], "roles": [role(guild_id, "@everyone", everyone, 0)] + [
                role(role_id, role_name, permissions, n) for n, (role_id, role_name, permissions)
                in enumerate(roles, start=1)],
            "members": [self.member_payload(self.bot_user)], "threads": [],
            "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "channels": [text_channel(cid, cname, n) for n, (cid, cname) in enumerate(channels)],
            "premium_tier": 0, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "preferred_locale": "en-US",
            "system_channel_flags": 0, "afk_timeout": 300, "joined_at": _now_iso(),
        }
        self.guilds[guild_id] = guild
        for channel in guild["channels"]:
            self.channels[int(channel["id"])] = channel
        return guild

    def add_guild(self, name: str, channels: list[str], roles: dict[str, int] | None = None,
                  everyone: int = READER) -> dict[str, Any]:
        """Another guild the bot is in (before the client connects): channel names, role name -> permissions.
        Returns its payload; ``ids(guild)`` maps its channel and role names to their ids."""
        made = self._make_guild(self.snowflake(), name, [(self.snowflake(), c) for c in channels],
                                [(self.snowflake(), r, p) for r, p in (roles or {}).items()], everyone)
        return made

    @staticmethod
    def ids(guild: dict[str, Any]) -> dict[str, int]:
        """A guild's channel and role names -> ids (and "guild" -> the guild's id)."""
        named = {c["name"]: int(c["id"]) for c in guild["channels"]}
        named.update({r["name"]: int(r["id"]) for r in guild["roles"]})
        named["guild"] = int(guild["id"])
        return named

    def join(self, guild_id: int, user_id: int, roles: list[int] = ()) -> None:  # type: ignore[assignment]
        """``user_id`` becomes a member of the guild with ``roles``; again, their roles change."""
        self.members[(guild_id, user_id)] = list(roles)

    def leave(self, guild_id: int, user_id: int) -> None:
        self.members.pop((guild_id, user_id), None)

    async def set_overwrite(self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0,
                            is_member: bool = False) -> None:
        """Set a channel's permission overwrite for a role (or a member) and tell the bot (CHANNEL_UPDATE)."""
        channel = self.channels[channel_id]
        overwrites = [o for o in channel["permission_overwrites"] if int(o["id"]) != target_id]
        overwrites.append({"id": str(target_id), "type": 1 if is_member else 0, "allow": str(allow),
                           "deny": str(deny)})
        channel["permission_overwrites"] = overwrites
        await self.dispatch("CHANNEL_UPDATE", channel)

    def member_payload(self, user: dict[str, Any], roles: list[int] | None = None,
                       permissions: int = VIEW_CHANNEL) -> dict[str, Any]:
        return {"user": user, "roles": [str(r) for r in roles or []], "joined_at": _now_iso(),
                "deaf": False, "mute": False, "flags": 0, "nick": None, "permissions": str(permissions)}

    def _message_payload(self, channel_id: int, author: dict[str, Any], content: str,
                         **extra: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(self.snowflake()), "channel_id": str(channel_id), "author": author,
            "content": content, "timestamp": _now_iso(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": [],
        }
        channel = self.channels.get(channel_id)
        if channel is not None and channel.get("guild_id"):
            payload["guild_id"] = channel["guild_id"]
        payload.update(extra)
        return payload

    # ---- driving: what users do ----------------------------------------------------------------

    async def post_message(self, content: str, *, channel_id: int | None = None, author_id: int = 1001,
                           author_name: str = "alice", is_bot: bool = False, mention_bot: bool = False,
                           roles: list[int] | None = None,
                           files: list[tuple[str, str, bytes]] = ()) -> FakeMessage:  # type: ignore[assignment]
        """A user (or another bot) posts a message; ``files`` are (name, content type, bytes)."""
        channel_id = channel_id or self.channel_id
        author = self.user_payload(author_id, author_name, bot=is_bot)
        if mention_bot:
            content = f"<@{BOT_USER_ID}> {content}"
        attachments = []
        for name, content_type, data in files:
            attachment_id = self.snowflake()
            path = f"/attachments/{channel_id}/{attachment_id}/{name}"
            self.attachments[path] = data
            attachments.append({"id": str(attachment_id), "filename": name, "size": len(data),
                                "url": self.base_url + path, "proxy_url": self.base_url + path,
                                "content_type": content_type})
        payload = self._message_payload(
            channel_id, author, content, attachments=attachments,
            mentions=[self.bot_user] if mention_bot else [],
        )
        if "guild_id" in payload:
            payload["member"] = {k: v for k, v in self.member_payload(author, roles).items() if k != "user"}
        message = FakeMessage(payload, history=[content])
        self.messages[message.id] = message
        await self.dispatch("MESSAGE_CREATE", payload)
        return message

    async def redeliver(self, message: FakeMessage) -> None:
        """Discord sends the same MESSAGE_CREATE again (it happens after a gateway resume)."""
        await self.dispatch("MESSAGE_CREATE", message.payload)

    def private_channel(self, user_ids: tuple[int, ...] = (1001, 1002)) -> int:
        """A group DM of users (the bot is not in it): where only a user-installed app can be used."""
        channel_id = self.snowflake()
        self.channels[channel_id] = {"id": str(channel_id), "type": GROUP_DM, "name": "friends",
                                     "recipients": [self.user_payload(u, f"user{u}") for u in user_ids]}
        self.closed_to_bot.add(channel_id)
        return channel_id

    def message_in(self, channel_id: int, content: str, *, author_id: int = 1002,
                   files: list[tuple[str, str, bytes]] = ()) -> FakeMessage:  # type: ignore[assignment]
        """A message in a channel the bot does not read (no gateway event): a context menu's target."""
        payload = self._message_payload(channel_id, self.user_payload(author_id, "bob"), content,
                                        attachments=[self._attachment(channel_id, *f) for f in files])
        message = FakeMessage(payload, history=[content])
        self.messages[message.id] = message
        return message

    def _attachment(self, channel_id: int, name: str, content_type: str, data: bytes) -> dict[str, Any]:
        attachment_id = self.snowflake()
        path = f"/attachments/{channel_id}/{attachment_id}/{name}"
        self.attachments[path] = data
        return {"id": str(attachment_id), "filename": name, "size": len(data), "url": self.base_url + path,
                "proxy_url": self.base_url + path, "content_type": content_type}

    def _offered(self, name: str, command_type: int, context: int, install: int) -> None:
        """Fail as Discord would not deliver it: no such command synced, or not for this context or install."""
        synced = [c for commands in self.synced_commands.values() for c in commands
                  if c["name"] == name and c.get("type", CHAT_INPUT) == command_type]
        assert synced, f"no command {name!r} of type {command_type} was synced"
        command = synced[0]
        contexts = command.get("contexts") or [CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL]
        installs = command.get("integration_types") or [GUILD_INSTALL]
        assert context in contexts and install in installs, \
            f"Discord does not offer {name!r} in context {context} to a {install} install ({command})"

    def _context_fields(self, channel_id: int, user_id: int, context: int, install: int,
                        permissions: int = VIEW_CHANNEL) -> dict[str, Any]:
        """Where an interaction happens: guild and member, or (in DMs) the user alone."""
        channel = self.channels.get(channel_id) or {"id": str(channel_id), "type": DM}
        user = self.user_payload(user_id, "alice")
        owners = {str(USER_INSTALL): str(user_id)} if install == USER_INSTALL else {
            str(GUILD_INSTALL): str(channel.get("guild_id") or "0")}
        fields: dict[str, Any] = {"channel_id": str(channel_id), "channel": channel, "context": context,
                                  "authorizing_integration_owners": owners}
        if channel.get("guild_id"):
            fields.update(guild_id=channel["guild_id"], member=self.member_payload(user, permissions=permissions))
        else:
            fields.update(guild_id=None, user=user)
        return fields

    async def message_command(self, target: FakeMessage, name: str = "Ask Phobos", *, user_id: int = 1001,
                              context: int = CONTEXT_GUILD, install: int = GUILD_INSTALL) -> FakeInteraction:
        """A user picks ``name`` from a message's Apps menu (a message context-menu command)."""
        self._offered(name, MESSAGE_COMMAND, context, install)
        token = f"itoken-{self.snowflake()}"
        payload = {
            "id": str(self.snowflake()), "application_id": str(APPLICATION_ID), "type": APPLICATION_COMMAND,
            "token": token, "version": 1, "app_permissions": "0", "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "attachment_size_limit": 10 * 1024 * 1024,
            **self._context_fields(target.channel_id, user_id, context, install),
            "data": {"id": str(self.snowflake()), "name": name, "type": MESSAGE_COMMAND,
                     "target_id": str(target.id), "resolved": {"messages": {str(target.id): target.payload}}},
        }
        interaction = FakeInteraction(payload)
        self.interactions[token] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def slash_command(self, name: str, options: dict[str, Any] | None = None, *,
                            channel_id: int | None = None, user_id: int = 1001,
                            focused: str | None = None, context: int = CONTEXT_GUILD,
                            install: int = GUILD_INSTALL, permissions: int = VIEW_CHANNEL) -> FakeInteraction:
        """A user runs ``/name`` (or, with ``focused``, types into that option: an autocomplete)."""
        channel_id = channel_id or self.channel_id
        if context != CONTEXT_GUILD or install != GUILD_INSTALL:
            self._offered(name, CHAT_INPUT, context, install)
        channel = self.channels.get(channel_id) or {"id": str(channel_id), "type": DM}
        option_payloads = []
        for key, value in (options or {}).items():
            option: dict[str, Any] = {"name": key, "type": 3, "value": value}
            if key == focused:
                option["focused"] = True
            option_payloads.append(option)
        token = f"itoken-{self.snowflake()}"
        payload = {
            "id": str(self.snowflake()), "application_id": str(APPLICATION_ID),
            "type": AUTOCOMPLETE if focused else APPLICATION_COMMAND, "token": token, "version": 1,
            "app_permissions": "0", "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            **self._context_fields(channel_id, user_id, context, install, permissions),
            "data": {"id": str(self.snowflake()), "name": name, "type": 1, "options": option_payloads,
                     "guild_id": channel.get("guild_id")},
        }
        interaction = FakeInteraction(payload)
        self.interactions[token] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _interaction_payload(self, interaction_type: int, channel_id: int, user_id: int,
                             data: dict[str, Any], **extra: Any) -> FakeInteraction:
        channel = self.channels[channel_id]
        token = f"itoken-{self.snowflake()}"
        payload = {
            "id": str(self.snowflake()), "application_id": str(APPLICATION_ID), "type": interaction_type,
            "token": token, "version": 1, "guild_id": channel.get("guild_id"), "channel_id": str(channel_id),
            "channel": channel, "member": self.member_payload(self.user_payload(user_id, "alice")),
            "app_permissions": "0", "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {}, "context": 0, "attachment_size_limit": 10 * 1024 * 1024,
            "data": data, **extra,
        }
        interaction = FakeInteraction(payload)
        self.interactions[token] = interaction
        return interaction

    async def click(self, message: FakeMessage, custom_id: str, *, user_id: int = 1001) -> FakeInteraction:
        """A user clicks a button ``message`` shows now (a button it does not show cannot be clicked)."""
        shown = [b.get("custom_id") for row in message.payload.get("components") or []
                 for b in row.get("components") or []]
        assert custom_id in shown, f"message {message.id} shows no button {custom_id!r} (it shows {shown})"
        interaction = self._interaction_payload(MESSAGE_COMPONENT, message.channel_id, user_id,
                                                {"custom_id": custom_id, "component_type": BUTTON},
                                                message=message.payload)
        await self.dispatch("INTERACTION_CREATE", interaction.payload)
        return interaction

    async def submit_modal(self, opened_by: FakeInteraction, values: dict[str, str], *,
                           user_id: int = 1001) -> FakeInteraction:
        """The user fills in and sends the modal that ``opened_by`` answered with."""
        modal = opened_by.modal
        assert modal is not None, "no modal was opened by that interaction"
        rows = [{"type": ACTION_ROW, "components": [{"type": TEXT_INPUT, "custom_id": row["components"][0]["custom_id"],
                                                     "value": values.get(row["components"][0]["custom_id"], "")}]}
                for row in modal["components"]]
        interaction = self._interaction_payload(MODAL_SUBMIT, int(opened_by.payload["channel_id"]), user_id,
                                                {"custom_id": modal["custom_id"], "components": rows})
        await self.dispatch("INTERACTION_CREATE", interaction.payload)
        return interaction

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send one gateway DISPATCH to every connected client."""
        frame = json.dumps({"op": OP_DISPATCH, "t": event, "s": next(self._sequence), "d": data})
        for socket in list(self._sockets):
            await socket.send_str(frame)

    # ---- observing: what the bot did -----------------------------------------------------------

    def bot_messages(self, channel_id: int | None = None) -> list[FakeMessage]:
        """Messages the bot posted (channel messages and interaction responses), oldest first."""
        return [m for m in self.messages.values()
                if m.payload["author"]["id"] == str(BOT_USER_ID)
                and (channel_id is None or m.channel_id == channel_id)]

    def requests_to(self, method: str, path_start: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_start)]

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 20.0) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.02)
        seen = [m.history for m in self.bot_messages()]
        raise AssertionError(f"timed out after {timeout_s}s waiting for {predicate}; the bot posted {seen}")

    # ---- gateway -------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        # discord.py asks for zlib/zstd compression; plain text frames are legal and skip it.
        hello = {"op": OP_HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}
        await socket.send_str(json.dumps(hello))
        async for frame in socket:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(frame.data)
            if message["op"] == OP_HEARTBEAT:
                await socket.send_str(json.dumps({"op": OP_HEARTBEAT_ACK}))
            elif message["op"] == OP_IDENTIFY:
                self.identify_payload = message["d"]
                self._sockets.append(socket)
                await self._send_ready(socket)
        if socket in self._sockets:
            self._sockets.remove(socket)
        return socket

    async def _send_ready(self, socket: web.WebSocketResponse) -> None:
        ready = {"v": 10, "user": self.bot_user,
                 "guilds": [{"id": str(guild_id), "unavailable": True} for guild_id in self.guilds],
                 "session_id": "fake-session", "resume_gateway_url": self.base_url.replace("http", "ws", 1),
                 "application": {"id": str(APPLICATION_ID), "flags": 0}, "private_channels": []}
        for event, data in [("READY", ready), *(("GUILD_CREATE", guild) for guild in self.guilds.values())]:
            frame = {"op": OP_DISPATCH, "t": event, "s": next(self._sequence), "d": data}
            await socket.send_str(json.dumps(frame))
        self.identified.set()

    # ---- REST ----------------------------------------------------------------------------------

    async def _download_attachment(self, request: web.Request) -> web.Response:
        data = self.attachments.get(request.path)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body = await self._read_body(request)
        recorded = RecordedRequest(request.method, path, dict(request.query), body, time.monotonic())
        self.requests.append(recorded)
        parts = path.strip("/").split("/")
        handler = self._route(request.method, parts)
        if handler is None:
            return _json({"message": f"fake Discord has no {request.method} {path}", "code": 0}, status=404)
        try:
            result = await handler(parts, body or {}, request)
        except _DiscordError as error:
            self.refused.append((recorded, error.code))
            data: dict[str, Any] = {"message": error.message, "code": error.code}
            if error.errors:
                data["errors"] = error.errors
            return _json(data, status=error.status)
        except _RateLimited as limited:
            self.rate_limited += 1
            self.refused.append((recorded, 429))
            reset_after = round(limited.retry_after_s, 3)
            return _json({"message": "You are being rate limited.", "retry_after": reset_after, "global": False},
                         status=429, headers={
                             "Retry-After": str(max(1, math.ceil(reset_after))), "Via": "1.1 google",
                             "X-RateLimit-Limit": str(limited.limit), "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                             "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                             "X-RateLimit-Bucket": limited.bucket, "X-RateLimit-Scope": "user"})
        if result is None:
            return web.Response(status=204)
        return _json(result)

    def _take_edit(self, bucket: str) -> None:
        """Count one message edit in ``bucket``; past the limit, a 429."""
        self._take_call(bucket, self.edit_calls, self.edit_window_s)

    def _take_call(self, bucket: str, calls: int, window_s: float) -> None:
        """Count one call in ``bucket`` (at most ``calls`` per ``window_s``); past the limit, a 429."""
        now = time.monotonic()
        times = self._edits.setdefault(bucket, collections.deque())
        while times and now - times[0] >= window_s:
            times.popleft()
        if len(times) >= calls:
            raise _RateLimited(bucket, window_s - (now - times[0]), calls)
        times.append(now)

    @staticmethod
    async def _read_body(request: web.Request) -> Any:
        if request.content_type == "application/json":
            return await request.json()
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if getattr(part, "name", None) == "payload_json":
                    return json.loads(await part.text())  # type: ignore[union-attr]
        return None

    def _route(self, method: str, parts: list[str]) -> Any:
        routes: list[tuple[str, tuple[str, ...], Any]] = [
            ("GET", ("users", "@me"), self._get_me),
            ("GET", ("oauth2", "applications", "@me"), self._get_application),
            ("GET", ("gateway", "bot"), self._get_gateway_bot),
            ("POST", ("channels", "*", "typing"), self._typing),
            ("POST", ("channels", "*", "messages"), self._create_message),
            ("PATCH", ("channels", "*", "messages", "*"), self._edit_message),
            ("DELETE", ("channels", "*", "messages", "*"), self._delete_message),
            ("POST", ("channels", "*", "messages", "*", "threads"), self._create_thread),
            ("GET", ("channels", "*"), self._get_channel),
            ("GET", ("guilds", "*", "members", "*"), self._get_member),
            ("PUT", ("applications", "*", "commands"), self._sync_commands),
            ("PUT", ("applications", "*", "guilds", "*", "commands"), self._sync_commands),
            ("POST", ("interactions", "*", "*", "callback"), self._interaction_callback),
            ("POST", ("webhooks", "*", "*"), self._create_followup),
            ("PATCH", ("webhooks", "*", "*", "messages", "*"), self._edit_webhook_message),
        ]
        for route_method, pattern, handler in routes:
            if route_method == method and len(pattern) == len(parts) and all(
                    p in ("*", part) for p, part in zip(pattern, parts, strict=True)):
                return handler
        return None

    async def _get_me(self, parts: list[str], body: Any, request: web.Request) -> Any:
        if request.headers.get("Authorization") != f"Bot {BOT_TOKEN}":
            raise _DiscordError(401, "401: Unauthorized", 0)
        return self.bot_user

    async def _get_application(self, parts: list[str], body: Any, request: web.Request) -> Any:
        return {"id": str(APPLICATION_ID), "name": "Phobos", "description": "", "icon": None,
                "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                "owner": self.user_payload(1, "owner"), "flags": 0}

    async def _get_gateway_bot(self, parts: list[str], body: Any, request: web.Request) -> Any:
        return {"url": self.base_url.replace("http", "ws", 1) + "/gateway", "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0,
                                        "max_concurrency": 1}}

    async def _typing(self, parts: list[str], body: Any, request: web.Request) -> Any:
        return None

    async def _get_member(self, parts: list[str], body: Any, request: web.Request) -> Any:
        if request.headers.get("Authorization") != f"Bot {BOT_TOKEN}":
            raise _DiscordError(401, "401: Unauthorized", 0)
        guild_id, user_id = int(parts[1]), int(parts[3])
        if guild_id not in self.guilds:
            raise _DiscordError(404, "Unknown Guild", 10004)
        self._take_call(f"member:{guild_id}", self.member_calls, self.member_window_s)
        roles = self.members.get((guild_id, user_id))
        if roles is None:
            raise _DiscordError(404, "Unknown Member", 10007)
        return self.member_payload(self.user_payload(user_id, f"user{user_id}"), roles)

    async def _get_channel(self, parts: list[str], body: Any, request: web.Request) -> Any:
        channel = self.channels.get(int(parts[1]))
        if channel is None:
            raise _DiscordError(404, "Unknown Channel", 10003)
        return channel

    async def _create_message(self, parts: list[str], body: Any, request: web.Request) -> Any:
        _check_content(body)
        _check_components(body)
        channel_id = int(parts[1])
        if channel_id in self.closed_to_bot:
            raise _DiscordError(403, "Missing Access", 50001)
        extra: dict[str, Any] = {}
        if body.get("message_reference"):
            extra["message_reference"] = body["message_reference"]
        payload = self._message_payload(channel_id, self.bot_user, body.get("content") or "", **extra)
        payload["components"] = body.get("components") or []
        message = FakeMessage(payload, history=[payload["content"]])
        message.payload["allowed_mentions"] = body.get("allowed_mentions")
        self.messages[message.id] = message
        return payload

    async def _edit_message(self, parts: list[str], body: Any, request: web.Request) -> Any:
        message = self.messages.get(int(parts[3]))
        if message is None:
            raise _DiscordError(404, "Unknown Message", 10008)
        _check_content(body)
        _check_components(body)
        self._take_edit(f"edit:{parts[1]}")
        return self._apply_edit(message, body)

    async def _delete_message(self, parts: list[str], body: Any, request: web.Request) -> Any:
        if self.messages.pop(int(parts[3]), None) is None:
            raise _DiscordError(404, "Unknown Message", 10008)
        return None

    def _apply_edit(self, message: FakeMessage, body: dict[str, Any]) -> dict[str, Any]:
        if "content" in body:
            message.payload["content"] = body["content"] or ""
            message.history.append(message.payload["content"])
            message.edit_times.append(time.monotonic())
        if "components" in body:
            message.payload["components"] = body["components"] or []
        message.payload["edited_timestamp"] = _now_iso()
        message.payload["allowed_mentions"] = body.get("allowed_mentions")
        return message.payload

    async def _create_thread(self, parts: list[str], body: Any, request: web.Request) -> Any:
        # Discord gives a thread started from a message that message's id.
        thread = self.add_thread(int(parts[1]), int(parts[3]), body.get("name", "thread"),
                                 body.get("auto_archive_duration", 1440))
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True))
        return thread

    def add_thread(self, parent_id: int, thread_id: int, name: str = "thread",
                   auto_archive_duration: int = 1440, is_private: bool = False) -> dict[str, Any]:
        """A thread Discord knows; without a THREAD_CREATE the bot learns of it only by fetching it."""
        thread = {
            "id": str(thread_id),
            "type": PRIVATE_THREAD if is_private else PUBLIC_THREAD,
            "guild_id": self.channels[parent_id]["guild_id"], "parent_id": str(parent_id),
            "owner_id": str(BOT_USER_ID), "name": name, "last_message_id": None,
            "message_count": 0, "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
            "thread_metadata": {"archived": False, "locked": False, "archive_timestamp": _now_iso(),
                                "auto_archive_duration": auto_archive_duration},
        }
        self.channels[thread_id] = thread
        return thread

    async def _sync_commands(self, parts: list[str], body: Any, request: web.Request) -> Any:
        # Discord answers every command with a description ("" for context menus, which have none).
        commands = [dict({"description": ""}, **c, id=str(self.snowflake()), application_id=str(APPLICATION_ID),
                         version="1") for c in body or []]
        self.synced_commands["/" + "/".join(parts)] = commands
        return commands

    def _interaction(self, token: str) -> FakeInteraction:
        """The interaction behind a webhook token: unknown if never acknowledged, refused once expired."""
        interaction = self.interactions.get(token)
        if interaction is None or not interaction.callbacks:
            raise _DiscordError(404, "Unknown interaction", 10062)
        if time.monotonic() - interaction.dispatched_at >= self.interaction_token_ttl_s:
            raise _DiscordError(401, "Invalid Webhook Token", 50027)
        return interaction

    async def _interaction_callback(self, parts: list[str], body: Any, request: web.Request) -> Any:
        interaction = self.interactions.get(parts[2])
        if interaction is None or time.monotonic() - interaction.dispatched_at > self.ack_deadline_s:
            raise _DiscordError(404, "Unknown interaction", 10062)
        if interaction.callbacks:
            raise _DiscordError(400, "Interaction has already been acknowledged.", 40060)
        _check_content(body.get("data"))
        callback_type = body["type"]
        if callback_type == MODAL:
            if interaction.payload["type"] == MODAL_SUBMIT:
                raise _invalid("type", "A modal cannot answer a modal submission.")
            _check_modal(body.get("data") or {})
            interaction.modal = body["data"]
        interaction.callbacks.append(body)
        response: dict[str, Any] = {"interaction": {"id": interaction.payload["id"],
                                                    "type": interaction.payload["type"]}}
        if callback_type in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            content = (body.get("data") or {}).get("content") or ""
            payload = self._message_payload(int(interaction.payload["channel_id"]), self.bot_user, content,
                                            interaction={"id": interaction.payload["id"],
                                                         "type": interaction.payload["type"],
                                                         "name": interaction.payload["data"].get("name", ""),
                                                         "user": (interaction.payload.get("member") or {}).get("user")
                                                         or interaction.payload.get("user")})
            payload["flags"] = (body.get("data") or {}).get("flags") or 0
            interaction.original = FakeMessage(payload, history=[content])
            self.messages[interaction.original.id] = interaction.original
            response["interaction"]["response_message_id"] = payload["id"]
            response["interaction"]["response_message_loading"] = callback_type == DEFERRED_CHANNEL_MESSAGE
            response["resource"] = {"type": callback_type, "message": payload}
        else:
            response["resource"] = {"type": callback_type}
        return response

    async def _create_followup(self, parts: list[str], body: Any, request: web.Request) -> Any:
        interaction = self._interaction(parts[2])
        _check_content(body)
        _check_components(body)
        payload = self._message_payload(int(interaction.payload["channel_id"]), self.bot_user,
                                        body.get("content") or "")
        payload["components"] = body.get("components") or []
        message = FakeMessage(payload, history=[payload["content"]])
        message.payload["allowed_mentions"] = body.get("allowed_mentions")
        interaction.followups.append(message)
        self.messages[message.id] = message
        return payload

    async def _edit_webhook_message(self, parts: list[str], body: Any, request: web.Request) -> Any:
        interaction = self._interaction(parts[2])
        _check_content(body)
        _check_components(body)
        self._take_edit(f"webhook:{parts[2]}")
        if parts[4] == "@original":
            if interaction.original is None:
                raise _DiscordError(404, "Unknown Webhook", 10015)
            return self._apply_edit(interaction.original, body)
        message = self.messages.get(int(parts[4]))
        if message is None:
            raise _DiscordError(404, "Unknown Message", 10008)
        return self._apply_edit(message, body)
