"""A local, protocol-level fake of the Slack Web API, file hosting, response_url and Socket Mode.

It answers the calls the adapter makes the way Slack does (``{"ok": true, ...}`` JSON), records every
call and every file download (with its headers) for tests to assert on, and can push Socket Mode
envelopes to a connected app. It serves on 127.0.0.1; the same server reached as ``localhost`` plays a
host that is *not* Slack's, to prove the bot token never goes there.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER_ID = "UPHOBOS"
BOT_ID = "BPHOBOS"
TEAM_ID = "T0TEAM"


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

    calls: list[ApiCall] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to response_url
    files: dict[str, bytes] = field(default_factory=dict)  # path under /files/ -> bytes
    redirects: dict[str, str] = field(default_factory=dict)  # path under /files/ -> Location
    not_member_of: set[str] = field(default_factory=set)  # channels where posting fails
    socket_acks: list[str] = field(default_factory=list)  # envelope ids the app acknowledged
    port: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _socket: web.WebSocketResponse | None = None
    _socket_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # ---- lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
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
        return f"http://127.0.0.1:{self.port}/response/{uuid.uuid4().hex}"

    # ---- what tests look at

    def api(self, method: str, **match: Any) -> list[ApiCall]:
        """Recorded calls of ``method`` whose args include every ``match`` item."""
        return [c for c in self.calls if c.method == method
                and all(c.args.get(k) == v for k, v in match.items())]

    def messages(self, channel: str) -> dict[str, str]:
        """The current text of every message the app posted in ``channel``: ts -> text, edits applied."""
        shown: dict[str, str] = {}
        for call in self.calls:
            if call.args.get("channel") != channel:
                continue
            if call.method in ("chat.postMessage", "chat.update"):
                shown[call.args["ts"]] = call.args.get("text", "")
            elif call.method == "chat.delete":
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
        if request.content_type == "application/json":
            args = await request.json()
        else:
            args = dict(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        result: dict[str, Any] = {"ok": True}
        if method == "auth.test":
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
        await self._record(ApiCall(method, args, token), self.calls)
        return web.json_response(result)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        await self._record(Download(path, request.host, request.headers.get("Authorization")), self.downloads)
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if path not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[path], content_type="application/pdf")

    async def _response(self, request: web.Request) -> web.Response:
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
