"""👍/👎 on Slack answers: the Block Kit the final answer carries, and the "what was wrong?" modal.

A final answer's last message is sent with ``blocks``: its text in section blocks, then a
``context_actions`` block with Slack's ``feedback_buttons`` element (the 👍/👎 pair Slack draws for AI
apps, https://docs.slack.dev/reference/block-kit/block-elements/feedback-buttons-element); each
button's value is ``RATING:JOB_ID``, so a click is understood from the payload alone, also after a
restart. ``text`` stays as the notification fallback. A 👎 opens a modal with one optional line; its
submission records the reason. Limits kept here are Slack's documented ones
(https://docs.slack.dev/reference/block-kit/blocks).
"""

from __future__ import annotations

import json
from typing import Any

from bot.render import split_message
from jobs.interactions import BAD, GOOD

SECTION_TEXT_LIMIT = 3000  # a section block's text
RATE_BLOCK_ID = "phobos_rate"
RATE_ACTION_ID = "phobos_rate"  # the feedback_buttons element; the clicked button's value says which
REASON_VIEW_ID = "phobos_rate_reason"  # the modal's callback_id
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "reason_text"
REASON_MAX_CHARS = 500  # what the interaction log keeps of a reason


def text_blocks(text: str) -> list[dict[str, Any]]:
    """``text`` as section blocks (code fences kept whole in each)."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in split_message(text, SECTION_TEXT_LIMIT) if piece.strip()]


def rating_block(job_id: str) -> dict[str, Any]:
    """The 👍/👎 pair for the answer to ``job_id``."""
    button = {GOOD: ("👍", "Good answer"), BAD: ("👎", "Wrong or unhelpful answer")}
    return {"type": "context_actions", "block_id": RATE_BLOCK_ID, "elements": [{
        "type": "feedback_buttons", "action_id": RATE_ACTION_ID,
        **{f"{side}_button": {"text": {"type": "plain_text", "text": button[rating][0]},
                              "accessibility_label": button[rating][1], "value": f"{rating}:{job_id}"}
           for side, rating in (("positive", GOOD), ("negative", BAD))}}]}


def answer_blocks(text: str, job_id: str) -> list[dict[str, Any]]:
    """The last answer message as blocks: its text in sections, then 👍/👎."""
    return [*text_blocks(text), rating_block(job_id)]


def parse_rating(value: str) -> tuple[str, str] | None:
    """(rating, job id) from a clicked feedback button's value, or None for one that is not ours."""
    rating, _, job_id = value.partition(":")
    return (rating, job_id) if rating in (GOOD, BAD) and job_id else None


def reason_modal(job_id: str, channel: str) -> dict[str, Any]:
    """The modal a 👎 opens: one optional line; ``private_metadata`` carries which answer it is about."""
    return {
        "type": "modal", "callback_id": REASON_VIEW_ID,
        "private_metadata": json.dumps({"job": job_id, "channel": channel}),
        "title": {"type": "plain_text", "text": "What was wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK_ID, "optional": True,
            "label": {"type": "plain_text", "text": "What was wrong? (optional, one line)"},
            "element": {"type": "plain_text_input", "action_id": REASON_ACTION_ID,
                        "max_length": REASON_MAX_CHARS},
        }],
    }


def submitted_reason(view: dict[str, Any]) -> tuple[str, str]:
    """The job id and the reason typed into a submitted :func:`reason_modal` ("" when left empty)."""
    job_id = str(json.loads(view.get("private_metadata") or "{}").get("job", ""))
    value = (view.get("state", {}).get("values", {}).get(REASON_BLOCK_ID, {})
             .get(REASON_ACTION_ID, {}).get("value"))
    return job_id, str(value or "")
