"""A local, protocol-level fake of the Slack Web API, file hosting, response_url and Socket Mode.

It answers the calls the adapter makes the way Slack does (``{"ok": true, ...}`` JSON), records every
accepted call and every file download (with its headers) for tests to assert on, and can push Socket
Mode envelopes to a connected app. It serves on 127.0.0.1; the same server reached as ``localhost``
plays a host that is *not* Slack's, to prove the bot token never goes there.

It is strict where Slack is (https://docs.slack.dev/apis/web-api/rate-limits):

- chat.update and chat.delete are Tier 3 (about 50 calls a minute per workspace); chat.postMessage
  allows about one message a second per channel with short bursts. Past a limit the call answers
  HTTP 429 with ``Retry-After`` (whole seconds) and ``{"ok": false, "error": "ratelimited"}``, and is
  counted in :attr:`FakeSlack.rate_limited`. :class:`SlackLimits` scales the windows down for tests;
  the shape stays the same.
- text longer than :attr:`SlackLimits.text_chars` answers ``msg_too_long``;
- a file URL fetched without the bot token answers 200 with an HTML sign-in page, as Slack does;
- a response_url takes at most 5 posts within 30 minutes;
- ``blocks`` are checked against Block Kit's limits (50 blocks a message, 3,000 characters of section
  text, 25 elements an actions block, a button's value 2,000 and action_id 255 characters): past
  one the call answers ``invalid_blocks``;
- the streaming methods (https://docs.slack.dev/reference/methods/chat.startStream, .../chat.appendStream,
  .../chat.stopStream): a stream is started in a thread (``thread_ts``) and, outside a DM, names its
  reader (``recipient_user_id`` + ``recipient_team_id``); appendStream and stopStream take only the ts
  of a stream this fake started and has not stopped (``message_not_in_streaming_state``);
  ``markdown_text`` is at most 12,000 characters a call (``msg_too_long``); stopStream's ``blocks`` obey
  the limits below. Rate limits per workspace: appendStream Tier 4 (100+ a minute, the .md reference
  page's ``rate_limit: t4``), startStream and stopStream Tier 2 (about 20 a minute; api.slack.com/methods/
  chat.stopStream lists Tier 2). A workspace in :attr:`FakeSlack.refuses_streams` answers startStream
  with an error, as GovSlack or an old plan would;
- assistant.threads.setStatus / setTitle / setSuggestedPrompts
  (https://docs.slack.dev/reference/methods/assistant.threads.setStatus and siblings) need
  ``channel_id`` and ``thread_ts``; suggested prompts are 1 to 4, each with a title and a message;
  a title is required to set one. Events for the pane (``assistant_thread_started``,
  ``assistant_thread_context_changed``) are built by :func:`assistant_thread_started` and
  :func:`assistant_thread_context_changed` in the shape of https://docs.slack.dev/reference/events/;
- ``context_actions`` blocks hold 1 to 5 ``feedback_buttons`` / ``icon_button`` elements
  (https://docs.slack.dev/reference/block-kit/blocks/context-actions-block); a feedback button's text
  is at most 75 characters and its value 2,000;
- users.conversations (Tier 3, its own window of ``SlackLimits.membership_calls``) lists the channels a
  user is a member of, from :attr:`FakeSlack.channels`: with a bot token, the private ones only where the
  bot is a member too ("restricted to those where the calling user shares membership"); pages of at
  most ``limit`` (1 to 999, else ``invalid_limit``; the fake may return fewer, ``page_max``, as Slack
  may) with an opaque ``response_metadata.next_cursor`` (a cursor it did not issue: ``invalid_cursor``);
  a token other than the bot's answers ``invalid_auth``, none ``not_authed``; a type the token lacks
  the scope for (``channels:read``, ``groups:read``) answers ``missing_scope`` with ``needed`` and
  ``provided``;
- views.open takes only a trigger_id the fake issued (:meth:`FakeSlack.trigger_id`, as an interaction
  payload carries one) and only within 3 seconds of issuing it, else ``expired_trigger_id``; a modal's
  title is 24 characters at most, its private_metadata 3,000, its blocks 100.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER_ID = "UPHOBOS"
BOT_ID = "BPHOBOS"
TEAM_ID = "T0TEAM"
TIER3_METHODS = ("chat.update", "chat.delete")  # limited per workspace, shared by every conversation
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
ASSISTANT_METHODS = ("assistant.threads.setStatus", "assistant.threads.setTitle",
                     "assistant.threads.setSuggestedPrompts")
MEMBERSHIP_METHOD = "users.conversations"  # Tier 3 too, in a window of its own (limits are per method)
BOT_TOKEN_SCOPES = frozenset({"chat:write", "commands", "files:read", "channels:read", "groups:read",
                              "im:history", "channels:history", "groups:history"})
TYPE_SCOPES = {"public_channel": "channels:read", "private_channel": "groups:read", "im": "im:read",
               "mpim": "mpim:read"}
MAX_LIST_LIMIT = 999  # users.conversations: "an integer with a max value of 999"
SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


@dataclass(frozen=True)
class SlackLimits:
    """Slack's published limits; tests shrink ``tier3_window_s`` and raise rates to run fast."""

    tier3_calls: int = 50  # chat.update / chat.delete per window per workspace
    tier3_window_s: float = 60.0
    tier4_calls: int = 100  # chat.appendStream per window per workspace
    tier2_calls: int = 20  # chat.startStream, chat.stopStream (each) per window per workspace
    markdown_text_chars: int = 12_000  # the streaming methods' markdown_text, per call
    context_actions_elements: int = 5
    feedback_text_chars: int = 75
    suggested_prompts: int = 4
    post_per_s: float = 1.0  # chat.postMessage per channel, sustained
    post_burst: int = 3  # ... and how many may come at once
    text_chars: int = 4000  # Slack's documented limit for a message's text
    response_url_uses: int = 5
    response_url_ttl_s: float = 30 * 60
    trigger_ttl_s: float = 3.0  # a trigger_id opens a view within this long of the interaction
    blocks_per_message: int = 50
    section_text_chars: int = 3000
    actions_elements: int = 25
    button_value_chars: int = 2000
    action_id_chars: int = 255
    modal_title_chars: int = 24
    private_metadata_chars: int = 3000
    modal_blocks: int = 100
    membership_calls: int = 50  # users.conversations per window per workspace (Tier 3)
    membership_window_s: float = 60.0
    page_max: int = 999  # the most channels one users.conversations page holds, whatever the limit asked


class _Window:
    """Calls within a sliding window: the Tier shape."""

    def __init__(self, calls: int, window_s: float):
        self.calls, self.window_s = calls, window_s
        self.times: collections.deque[float] = collections.deque()

    def retry_after_s(self, now: float) -> float:
        """0 when a call may go now (and counts it), else how long until one may."""
        while self.times and now - self.times[0] >= self.window_s:
            self.times.popleft()
        if len(self.times) < self.calls:
            self.times.append(now)
            return 0.0
        return self.window_s - (now - self.times[0])


class _Bucket:
    """A token bucket: ``rate_per_s`` sustained, ``burst`` at once."""

    def __init__(self, rate_per_s: float, burst: int):
        self.rate_per_s, self.burst = rate_per_s, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def retry_after_s(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


@dataclass
class Channel:
    """A channel as users.conversations describes it, and who is in it now."""

    name: str
    is_private: bool = False
    members: set[str] = field(default_factory=set)
    is_archived: bool = False

    def payload(self, channel_id: str) -> dict[str, Any]:
        return {"id": channel_id, "name": self.name, "is_channel": not self.is_private,
                "is_group": self.is_private, "is_private": self.is_private, "is_archived": self.is_archived,
                "is_im": False, "is_mpim": False, "context_team_id": TEAM_ID}


@dataclass
class ApiCall:
    method: str  # e.g. "chat.postMessage"
    args: dict[str, Any]
    token: str


@dataclass
class Download:
    path: str
    host: str  # the Host header: "127.0.0.1:PORT" (Slack) or "localhost:PORT" (elsewhere)
    authorization: str | None


@dataclass
class FakeSlack:
    """Start with ``await fake.start()``; ``url`` is the Web API base URL for ``AsyncWebClient``."""

    limits: SlackLimits = field(default_factory=SlackLimits)
    calls: list[ApiCall] = field(default_factory=list)  # accepted calls only
    refused: list[ApiCall] = field(default_factory=list)  # calls answered with an error
    rate_limited: collections.Counter[str] = field(default_factory=collections.Counter)  # 429s by method
    # Calls that came while a 429's Retry-After for that method (and channel, for posts) still ran.
    unhonoured: collections.Counter[str] = field(default_factory=collections.Counter)
    downloads: list[Download] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to response_url
    files: dict[str, bytes] = field(default_factory=dict)  # path under /files/ -> bytes
    redirects: dict[str, str] = field(default_factory=dict)  # path under /files/ -> Location
    not_member_of: set[str] = field(default_factory=set)  # channels where posting fails
    socket_acks: list[str] = field(default_factory=list)  # envelope ids the app acknowledged
    refused_responses: int = 0  # response_url posts past its 5 uses or 30 minutes
    members: dict[str, list[str]] = field(default_factory=dict)  # channel -> user ids (conversations.members)
    refuses_streams: bool = False  # chat.startStream answers an error (GovSlack, an old plan)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)  # ts -> {"channel", "text", "open"}
    port: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _socket: web.WebSocketResponse | None = None
    _socket_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tier3: _Window | None = None
    _windows: dict[str, _Window] = field(default_factory=dict)  # per method, for the streaming tiers
    _quiet_until: dict[str, float] = field(default_factory=dict)  # limit key -> end of its last Retry-After
    _post_buckets: dict[str, _Bucket] = field(default_factory=dict)
    _response_urls: dict[str, list[float]] = field(default_factory=dict)  # id -> times of its posts
    _triggers: dict[str, float] = field(default_factory=dict)  # trigger_id -> when it was issued
    # The workspace's channels: id -> Channel; members are user ids (BOT_USER_ID where the bot is in).
    channels: dict[str, Channel] = field(default_factory=dict)
    bot_token: str = "xoxb-test-token"
    token_scopes: frozenset[str] = BOT_TOKEN_SCOPES
    _membership: _Window | None = None
    _cursors: dict[str, tuple[str, int]] = field(default_factory=dict)  # cursor -> (who, offset)

    # ---- lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        # the SDK reads lists (users.conversations, conversations.members) by GET
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/files/{path:.*}", self._file)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/socket", self._socket_mode)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def file_url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/files/{path}"

    def response_url(self) -> str:
        url_id = uuid.uuid4().hex
        self._response_urls[url_id] = [time.monotonic()]  # issued now; the first entry is its birth
        return f"http://127.0.0.1:{self.port}/response/{url_id}"

    def trigger_id(self) -> str:
        """A trigger_id as an interaction payload carries one; views.open takes it for 3 seconds."""
        trigger = f"{next(self._ts)}.{uuid.uuid4().hex[:12]}"
        self._triggers[trigger] = time.monotonic()
        return trigger

    @property
    def total_rate_limited(self) -> int:
        return sum(self.rate_limited.values())

    # ---- what tests look at

    def api(self, method: str, **match: Any) -> list[ApiCall]:
        """Recorded calls of ``method`` whose args include every ``match`` item."""
        return [c for c in self.calls if c.method == method
                and all(c.args.get(k) == v for k, v in match.items())]

    def messages(self, channel: str) -> dict[str, str]:
        """The current text of every message the app posted in ``channel``: ts -> text, edits applied.

        A streamed message reads its streamed markdown, then the text of the blocks it was stopped with.
        """
        shown: dict[str, str] = {}
        for call in self.calls:
            if call.args.get("channel") != channel:
                continue
            if call.method in ("chat.postMessage", "chat.update"):
                shown[call.args["ts"]] = call.args.get("text", "")
            elif call.method == "chat.delete":
                shown.pop(call.args["ts"], None)
            elif call.method in STREAM_METHODS:
                ts = call.args["ts"]
                text = shown.get(ts, "") + str(call.args.get("markdown_text") or "")
                sections = [b["text"]["text"] for b in _parsed(call.args.get("blocks")) or []
                            if b.get("type") == "section"]
                shown[ts] = "\n\n".join([text, *sections]) if sections else text
        return shown

    def thread_posts(self, channel: str, thread_ts: str) -> list[str]:
        """The ts of every message the app started in one thread (posted or streamed), in order."""
        return [c.args["ts"] for c in self.calls if c.args.get("channel") == channel
                and c.args.get("thread_ts") == thread_ts and c.method in ("chat.postMessage", "chat.startStream")]

    def blocks(self, channel: str) -> dict[str, list[dict[str, Any]]]:
        """The current blocks of every message the app posted in ``channel`` with blocks: ts -> blocks."""
        shown: dict[str, list[dict[str, Any]]] = {}
        for call in self.calls:
            if call.args.get("channel") == channel and call.method in ("chat.postMessage", "chat.update",
                                                                      "chat.stopStream"):
                blocks = _parsed(call.args.get("blocks"))
                if blocks:
                    shown[call.args["ts"]] = blocks
                else:
                    shown.pop(call.args["ts"], None)
        return shown

    async def wait_for(self, predicate: Any, timeout_s: float = 60.0) -> None:
        """Wait until ``predicate()`` is true; recorded calls wake it up."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    # ---- Socket Mode

    async def send_envelope(self, envelope_type: str, payload: dict[str, Any], retry_attempt: int = 0) -> str:
        """Push an ``events_api`` / ``slash_commands`` envelope to the connected app; returns its id."""
        await asyncio.wait_for(self._socket_ready.wait(), timeout=20)
        assert self._socket is not None
        envelope_id = uuid.uuid4().hex
        await self._socket.send_json({"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                                      "accepts_response_payload": envelope_type != "events_api",
                                      "retry_attempt": retry_attempt, "retry_reason": ""})
        return envelope_id

    # ---- handlers

    async def _record(self, item: Any, into: list[Any]) -> None:
        async with self._changed:
            into.append(item)
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.method == "GET":
            args = dict(request.query)
        elif request.content_type == "application/json":
            args = await request.json()
        else:
            args = {**request.query, **dict(await request.post())}  # the SDK sends some methods' args as a query
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        call = ApiCall(method, args, token)
        limit_key = f"{method}:{args.get('channel')}" if method == "chat.postMessage" else method
        if time.monotonic() < self._quiet_until.get(limit_key, 0.0):
            self.unhonoured[method] += 1
        retry_after_s = self._retry_after_s(method, args)
        if retry_after_s > 0:
            self.rate_limited[method] += 1
            await self._record(call, self.refused)
            retry_after = max(1, math.ceil(retry_after_s))
            self._quiet_until[limit_key] = time.monotonic() + retry_after
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(retry_after)})
        result: dict[str, Any] = {"ok": True}
        if method in ("chat.postMessage", "chat.update") and len(str(args.get("text", ""))) > self.limits.text_chars:
            result = {"ok": False, "error": "msg_too_long"}
        elif method in ("chat.postMessage", "chat.update") and not self._blocks_ok(_parsed(args.get("blocks"))):
            result = {"ok": False, "error": "invalid_blocks"}
        elif method in STREAM_METHODS:
            result = self._stream(method, args)
        elif method in ASSISTANT_METHODS:
            result = self._assistant(method, args)
        elif method == "conversations.members":
            if args.get("channel") in self.members:
                result.update(members=self.members[str(args["channel"])], response_metadata={"next_cursor": ""})
            else:
                result = {"ok": False, "error": "channel_not_found"}
        elif method == "views.open":
            result = self._open_view(args)
        elif method == MEMBERSHIP_METHOD:
            result = self._user_conversations(args, token)
        elif method == "auth.test":
            result.update(user_id=BOT_USER_ID, bot_id=BOT_ID, team_id=TEAM_ID, user="phobos", team="Test")
        elif method == "chat.postMessage":
            if args.get("channel") in self.not_member_of:
                result = {"ok": False, "error": "not_in_channel"}
            else:
                args["ts"] = f"1800000000.{next(self._ts):06d}"
                result.update(channel=args["channel"], ts=args["ts"], message={"text": args.get("text", "")})
        elif method in ("chat.update", "chat.delete"):
            result.update(channel=args.get("channel"), ts=args.get("ts"))
        elif method == "apps.connections.open":
            result.update(url=f"ws://127.0.0.1:{self.port}/socket")
        else:
            result = {"ok": False, "error": "unknown_method"}
        await self._record(call, self.calls if result["ok"] else self.refused)
        return web.json_response(result)

    def _stream(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        channel, text = str(args.get("channel", "")), str(args.get("markdown_text") or "")
        if len(text) > self.limits.markdown_text_chars:
            return {"ok": False, "error": "msg_too_long"}
        if method == "chat.startStream":
            if self.refuses_streams:
                return {"ok": False, "error": "feature_not_enabled"}
            if channel in self.not_member_of:
                return {"ok": False, "error": "not_in_channel"}
            if not args.get("thread_ts"):
                return {"ok": False, "error": "invalid_arguments"}
            if not channel.startswith("D") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
                return {"ok": False, "error": "invalid_arguments"}
            args["ts"] = f"1800000000.{next(self._ts):06d}"
            self.streams[args["ts"]] = {"channel": channel, "open": True}
            return {"ok": True, "channel": channel, "ts": args["ts"]}
        stream = self.streams.get(str(args.get("ts")))
        if stream is None or stream["channel"] != channel or not stream["open"]:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        if method == "chat.appendStream" and not text:
            return {"ok": False, "error": "invalid_arguments"}
        if method == "chat.stopStream":
            if not self._blocks_ok(_parsed(args.get("blocks"))):
                return {"ok": False, "error": "invalid_blocks"}
            stream["open"] = False
        return {"ok": True, "channel": channel, "ts": args["ts"]}

    def _assistant(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        needs_thread = method != "assistant.threads.setSuggestedPrompts"
        if not args.get("channel_id") or (needs_thread and not args.get("thread_ts")):
            return {"ok": False, "error": "invalid_arguments"}
        if method == "assistant.threads.setTitle" and not args.get("title"):
            return {"ok": False, "error": "invalid_arguments"}
        if method == "assistant.threads.setSuggestedPrompts":
            prompts = _parsed(args.get("prompts")) or []
            if not 1 <= len(prompts) <= self.limits.suggested_prompts or not all(
                    p.get("title") and p.get("message") for p in prompts):
                return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True}

    def _blocks_ok(self, blocks: list[dict[str, Any]] | None) -> bool:
        if blocks is None:
            return True
        limits = self.limits
        if not isinstance(blocks, list) or len(blocks) > limits.blocks_per_message:
            return False
        for block in blocks:
            if block.get("type") == "section":
                if len(block.get("text", {}).get("text", "")) > limits.section_text_chars:
                    return False
            elif block.get("type") == "actions":
                elements = block.get("elements", [])
                if not elements or len(elements) > limits.actions_elements:
                    return False
                for element in elements:
                    if (len(str(element.get("value", ""))) > limits.button_value_chars
                            or len(str(element.get("action_id", ""))) > limits.action_id_chars):
                        return False
            elif block.get("type") == "context_actions":
                elements = block.get("elements", [])
                if not 1 <= len(elements) <= limits.context_actions_elements:
                    return False
                for element in elements:
                    if element.get("type") != "feedback_buttons" or len(str(element.get("action_id", ""))) > \
                            limits.action_id_chars:
                        return False
                    for side in ("positive_button", "negative_button"):
                        button = element.get(side) or {}
                        if (not button.get("value") or len(str(button["value"])) > limits.button_value_chars
                                or not 0 < len(button.get("text", {}).get("text", "")) <= limits.feedback_text_chars):
                            return False
            else:
                return False  # this fake knows only what the adapter sends
        return True

    def _open_view(self, args: dict[str, Any]) -> dict[str, Any]:
        issued_at = self._triggers.get(str(args.get("trigger_id")))
        if issued_at is None or time.monotonic() - issued_at > self.limits.trigger_ttl_s:
            return {"ok": False, "error": "expired_trigger_id"}
        view = _parsed(args.get("view")) or {}
        limits = self.limits
        if (view.get("type") != "modal"
                or len(view.get("title", {}).get("text", "")) > limits.modal_title_chars
                or len(view.get("private_metadata", "")) > limits.private_metadata_chars
                or len(view.get("blocks", [])) > limits.modal_blocks):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": {**view, "id": f"V{uuid.uuid4().hex[:10].upper()}"}}

    def _user_conversations(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token != self.bot_token:
            return {"ok": False, "error": "invalid_auth"}
        types = [t.strip() for t in str(args.get("types") or "public_channel").split(",") if t.strip()]
        needed = [TYPE_SCOPES.get(t, "") for t in types]
        if not all(needed):
            return {"ok": False, "error": "invalid_types"}
        lacking = [scope for scope in needed if scope not in self.token_scopes]
        if lacking:
            return {"ok": False, "error": "missing_scope", "needed": ",".join(lacking),
                    "provided": ",".join(sorted(self.token_scopes))}
        try:
            limit = int(args.get("limit") or 100)
        except ValueError:
            return {"ok": False, "error": "invalid_limit"}
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return {"ok": False, "error": "invalid_limit"}
        who = str(args.get("user") or BOT_USER_ID)
        offset = 0
        if args.get("cursor"):
            issued = self._cursors.get(str(args["cursor"]))
            if issued is None or issued[0] != who:
                return {"ok": False, "error": "invalid_cursor"}
            offset = issued[1]
        exclude_archived = str(args.get("exclude_archived", "false")).lower() in ("true", "1")
        listed = [(cid, c) for cid, c in sorted(self.channels.items())
                  if who in c.members and ("private_channel" if c.is_private else "public_channel") in types
                  and not (exclude_archived and c.is_archived)
                  # a bot sees a private channel's membership only where it is a member itself
                  and (not c.is_private or BOT_USER_ID in c.members)]
        page = listed[offset: offset + min(limit, self.limits.page_max)]
        next_cursor = ""
        if offset + len(page) < len(listed):
            next_cursor = base64.b64encode(f"{who}:{offset + len(page)}:{uuid.uuid4().hex[:6]}".encode()).decode()
            self._cursors[next_cursor] = (who, offset + len(page))
        return {"ok": True, "channels": [c.payload(cid) for cid, c in page],
                "response_metadata": {"next_cursor": next_cursor}}

    def _retry_after_s(self, method: str, args: dict[str, Any]) -> float:
        now = time.monotonic()
        if method == MEMBERSHIP_METHOD:
            if self._membership is None:
                self._membership = _Window(self.limits.membership_calls, self.limits.membership_window_s)
            return self._membership.retry_after_s(now)
        if method in TIER3_METHODS:
            if self._tier3 is None:
                self._tier3 = _Window(self.limits.tier3_calls, self.limits.tier3_window_s)
            return self._tier3.retry_after_s(now)
        if method in STREAM_METHODS:
            calls = self.limits.tier4_calls if method == "chat.appendStream" else self.limits.tier2_calls
            window = self._windows.setdefault(method, _Window(calls, self.limits.tier3_window_s))
            return window.retry_after_s(now)
        if method == "chat.postMessage":
            channel = str(args.get("channel"))
            bucket = self._post_buckets.setdefault(channel, _Bucket(self.limits.post_per_s, self.limits.post_burst))
            return bucket.retry_after_s(now)
        return 0.0

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        await self._record(Download(path, request.host, request.headers.get("Authorization")), self.downloads)
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if path not in self.files:
            raise web.HTTPNotFound()
        if not request.headers.get("Authorization"):
            # What Slack serves a browser without a session: its sign-in page, with a 200.
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        return web.Response(body=self.files[path], content_type="application/pdf")

    async def _response(self, request: web.Request) -> web.Response:
        url_id = request.match_info["id"]
        uses = self._response_urls.setdefault(url_id, [time.monotonic()])
        if (len(uses) - 1 >= self.limits.response_url_uses
                or time.monotonic() - uses[0] > self.limits.response_url_ttl_s):
            self.refused_responses += 1
            return web.Response(status=404, text="used_url" if len(uses) > 1 else "expired_url")
        uses.append(time.monotonic())
        payload = await request.json()
        payload["response_url_id"] = request.match_info["id"]
        await self._record(payload, self.responses)
        return web.Response(text="ok")

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket = ws
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {}, "connection_info": {}})
        self._socket_ready.set()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                envelope_id = json.loads(message.data).get("envelope_id")
                if envelope_id:
                    await self._record(envelope_id, self.socket_acks)
        return ws


def _parsed(value: Any) -> Any:
    """``blocks`` / ``view`` as sent: a JSON body carries them as objects, a form as JSON strings."""
    return json.loads(value) if isinstance(value, str) else value


def assistant_thread_started(user: str, channel: str, thread_ts: str, context_channel: str = "") -> dict[str, Any]:
    """The ``assistant_thread_started`` event Slack sends when a user opens the pane
    (https://docs.slack.dev/reference/events/assistant_thread_started)."""
    context = {"channel_id": context_channel, "team_id": TEAM_ID, "enterprise_id": None} if context_channel else {}
    return {"type": "assistant_thread_started", "event_ts": thread_ts,
            "assistant_thread": {"user_id": user, "channel_id": channel, "thread_ts": thread_ts,
                                 "context": context}}


def assistant_thread_context_changed(user: str, channel: str, thread_ts: str, context_channel: str) -> dict[str, Any]:
    """The ``assistant_thread_context_changed`` event: the user now views ``context_channel``
    (https://docs.slack.dev/reference/events/assistant_thread_context_changed)."""
    return {"type": "assistant_thread_context_changed", "event_ts": thread_ts,
            "assistant_thread": {"user_id": user, "channel_id": channel, "thread_ts": thread_ts,
                                 "context": {"channel_id": context_channel, "team_id": TEAM_ID,
                                             "enterprise_id": None}}}
