"""Slack's AI app pane: bolt's ``Assistant``, its greeting, title, status and the channel the user is viewing.

When a user opens a thread in the pane (``assistant_thread_started``), Phobos greets them and suggests
questions about the documents of the channel they are viewing (the files shared there, as the adapter
remembered them). ``assistant_thread_context_changed`` keeps that channel per thread in Redis (not in
the thread's message metadata, which bolt's default store edits into the first message). A question in
the pane titles the thread (``assistant.threads.setTitle``) the first time and shows a status with
loading messages (``assistant.threads.setStatus``) while it waits and retrieves; the answer streams
into the thread. The viewed channel is the question's scope only when the asker is a member of it
(``conversations.members``); otherwise the pane thread's own documents are searched.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis
from slack_bolt.context.assistant.thread_context import AssistantThreadContext
from slack_bolt.context.assistant.thread_context_store.async_store import AsyncAssistantThreadContextStore
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.permalinks import PERMALINK_PREFIX
from core.scope import Scope
from jobs import keys

log = logging.getLogger(__name__)

CONTEXT_PREFIX = keys.SLACK_PANE_CONTEXT_PREFIX
TITLED_PREFIX = keys.SLACK_PANE_TITLED_PREFIX
CONTEXT_TTL_S = 30 * 24 * 3600
TITLE_CHARS = 80  # a thread title is a line; the question may be long
PROMPTS = 4  # Slack shows up to four suggested prompts
GREETING = ("Hi! I answer questions from the documents shared in your channels, and say which file and "
            "page each answer comes from. Share a PDF (or .docx, .pptx, .md, .txt, .html) here or in a "
            "channel, then ask.")
LOADING_MESSAGES = ["Looking through the documents…", "Reading the passages that match…", "Writing the answer…"]
MEMBERS_PAGE = 1000


class RedisThreadContextStore(AsyncAssistantThreadContextStore):
    """Each pane thread's context (the channel its user views) in Redis, shared by adapter instances."""

    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def save(self, *, channel_id: str, thread_ts: str, context: dict[str, str]) -> None:
        await self.redis.set(f"{CONTEXT_PREFIX}{channel_id}:{thread_ts}", json.dumps(context), ex=CONTEXT_TTL_S)

    async def find(self, *, channel_id: str, thread_ts: str) -> AssistantThreadContext | None:
        raw = await self.redis.get(f"{CONTEXT_PREFIX}{channel_id}:{thread_ts}")
        context = json.loads(raw) if raw else {}
        return AssistantThreadContext(context) if context.get("channel_id") else None


async def suggested_prompts(redis: aioredis.Redis, team: str, channel: str) -> list[dict[str, str]]:
    """Questions about the files shared in ``channel`` (newest names first), or how to begin without any."""
    names: list[str] = []
    if channel:
        raw = await redis.hkeys(PERMALINK_PREFIX + Scope("slack", team, channel).key)
        names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
    prompts = [{"title": f"Summarise {name}"[:75], "message": f"What is {name} about?"} for name in names]
    prompts = prompts[: PROMPTS - 1]
    prompts.append({"title": "What can you do?", "message": "What can you do, and which documents can you see?"})
    return prompts


async def is_member(client: AsyncWebClient, channel: str, user: str) -> bool:
    """Whether ``user`` is a member of ``channel`` now (False when Slack will not say)."""
    cursor = None
    try:
        while True:
            resp = await client.conversations_members(channel=channel, cursor=cursor, limit=MEMBERS_PAGE)
            if user in (resp.get("members") or []):
                return True
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False
    except SlackApiError as exc:  # channel_not_found, not_in_channel: Phobos cannot tell, so it does not use it
        log.info("cannot check membership of %s: %s", channel, exc.response.get("error"))
        return False


def title_of(question: str) -> str:
    title = " ".join(question.split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


async def take_title(redis: aioredis.Redis, channel: str, thread_ts: str) -> bool:
    """True once per pane thread: its first question names it."""
    return bool(await redis.set(f"{TITLED_PREFIX}{channel}:{thread_ts}", "1", nx=True, ex=CONTEXT_TTL_S))


def started_thread(payload: dict[str, Any]) -> tuple[str, str, str, str]:
    """(user, pane channel, thread ts, viewed channel) of an ``assistant_thread_started`` event."""
    thread = payload.get("assistant_thread") or {}
    context = thread.get("context") or {}
    return (str(thread.get("user_id", "")), str(thread.get("channel_id", "")), str(thread.get("thread_ts", "")),
            str(context.get("channel_id") or ""))
