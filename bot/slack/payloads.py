"""Reading Slack payloads: whose workspace, who sent it, who rated, and the question without the @-mention.

Pure functions over the dicts bolt hands the listeners; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.ratings import rater_id

PLATFORM = "slack"


def workspace_of(payload: Mapping[str, Any]) -> str:
    """The workspace a Slack event envelope or slash command belongs to: the one the app is installed in.

    Both carry it as ``team_id``; an event's ``event.team`` names the *user's* team instead, which
    differs in Slack Connect channels, so it is never used.
    """
    return str(payload.get("team_id") or "unknown")


def rater_of(body: Mapping[str, Any]) -> str:
    """``slack:TEAM:USER`` for an interaction payload (block_actions, view_submission)."""
    team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or "unknown"
    return rater_id(PLATFORM, team, (body.get("user") or {}).get("id", ""))


def sender_of(event: Mapping[str, Any]) -> str:
    """Who sent an event: the user, else the bot or app that posted it (a workflow, an integration).
    "" leaves the job counted against its channel (Job.sender_key), never one bucket shared by all."""
    return str(event.get("user") or event.get("bot_id") or event.get("app_id") or "")


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """The question without the bot's own @-mention (``<@U123>`` or ``<@U123|phobos>``)."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)
    return " ".join(text.split())
