"""Reply events -> Slack: where a job's replies go (:class:`Route`) and the reply each job gets.

The reply itself is :class:`bot.reply.AnswerReply`; Slack supplies its markup (mrkdwn escaping,
``:warning:``), links to cited files (permalinks) and one of two surfaces (bot/slack/surfaces.py): the
native stream (``chat.startStream`` / ``appendStream`` / ``stopStream``) for answers in a thread, or
post-and-edit (``chat.postMessage`` / ``chat.update``) for everything else and wherever the workspace
refuses streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.budget import Budgets, EditBudget
from bot.messages import PostedStore
from bot.ratelimits import RateGate
from bot.reply import AnswerReply, LinkResolver, Markup
from bot.slack.limits import APPENDS_PER_MIN, EDITS_PER_MIN, SLACK_TEXT_LIMIT, UPDATE_INTERVAL_S
from bot.slack.permalinks import PermalinkStore
from bot.slack.surfaces import (
    UNLIMITED_EDITS_PER_MIN,
    VIA_CHAT,
    VIA_RESPONSE_URL,
    ChatSurface,
    SlackRoute,
    StreamSupport,
    StreamSurface,
)
from core.documents import Citation
from core.scope import Scope
from jobs.protocol import JobKind, ReplyEvent

__all__ = ["APPENDS_PER_MIN", "EDITS_PER_MIN", "SLACK_TEXT_LIMIT", "UPDATE_INTERVAL_S", "VIA_CHAT",
           "VIA_RESPONSE_URL", "Route", "SlackReply", "escape", "make_reply_factory"]


@dataclass(frozen=True)
class Route(SlackRoute):
    """Where a job's replies go in Slack. Travels in ``Job.meta`` and comes back on every reply event."""

    header: str = ""  # a line shown above the answer, e.g. the question of a slash command
    file_name: str = ""  # ingest: the file the status message is about
    kind: str = ""  # the job's kind: an ask's final answer carries 👍/👎

    def to_meta(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Route | None:
        try:
            return cls(**{name: str(meta[name]) for name in cls.__dataclass_fields__ if name in meta})
        except TypeError:  # a reply to a job this adapter did not make
            return None

    @property
    def workspace(self) -> str:
        return Scope.parse(self.scope).workspace if self.scope else ""


def escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters; model and file text must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


MARKUP = Markup(warn=":warning:", escape=escape, bold=lambda text: f"*{text}*")


class SlackReply(AnswerReply):
    """A job's reply in Slack over one surface; see bot/reply.py for what it shows when."""

    def __init__(self, route: Route, client: AsyncWebClient, http: aiohttp.ClientSession,
                 permalinks: PermalinkStore, budget: EditBudget | None = None, *, limit: int = SLACK_TEXT_LIMIT,
                 update_interval_s: float = UPDATE_INTERVAL_S, job_id: str = "", gate: RateGate | None = None,
                 append_budget: EditBudget | None = None, streams: StreamSupport | None = None):
        store = PostedStore(permalinks.redis, job_id) if job_id else None
        budget = budget or EditBudget(UNLIMITED_EDITS_PER_MIN, update_interval_s)
        chat = ChatSurface(route, client, http, budget, gate or RateGate(), store, limit=limit,
                           update_interval_s=update_interval_s)
        surface: ChatSurface | StreamSurface = chat
        if streams is not None and append_budget is not None and streams.may_stream(route):
            surface = StreamSurface(chat, append_budget, streams)

        async def links(citations: Sequence[Citation]) -> LinkResolver:
            found = await permalinks.lookup(Scope.parse(route.scope), (c.file_name for c in citations))
            return lambda citation: found.get(citation.file_name)

        super().__init__(surface, MARKUP, is_rated=route.kind == JobKind.ASK.value, header=route.header,
                         subject=route.file_name, links=links if route.scope else None)
        self.route = route


def make_reply_factory(client: AsyncWebClient, http: aiohttp.ClientSession, permalinks: PermalinkStore,
                       budgets: Budgets, *, limit: int = SLACK_TEXT_LIMIT, update_interval_s: float = UPDATE_INTERVAL_S,
                       gate: RateGate | None = None, append_budgets: Budgets | None = None,
                       streams: StreamSupport | None = None) -> Callable[[ReplyEvent], SlackReply | None]:
    """Builds a job's :class:`SlackReply` from the route its events carry (also after a restart)."""
    gate = gate or RateGate()

    def make(event: ReplyEvent) -> SlackReply | None:
        route = Route.from_meta(event.meta)
        if route is None:
            return None
        appends = append_budgets.of(route.workspace) if append_budgets is not None else None
        return SlackReply(route, client, http, permalinks, budgets.of(route.workspace), limit=limit,
                          update_interval_s=update_interval_s, job_id=event.job_id, gate=gate,
                          append_budget=appends, streams=streams)

    return make
