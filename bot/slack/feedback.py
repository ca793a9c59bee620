"""👍/👎 on Slack answers: the Block Kit the final answer carries, and the "what was wrong?" modal.

A final answer's last message is sent with ``blocks`` (its text in section blocks, then an actions
block with two buttons whose value is the job id); ``text`` stays as the notification fallback.
A 👎 opens a modal with one optional line; its submission records the reason. Limits kept here are
Slack's documented ones (https://docs.slack.dev/reference/block-kit/blocks).
"""

from __future__ import annotations

import json
from typing import Any

from bot.render import split_message
from jobs.interactions import BAD, GOOD

SECTION_TEXT_LIMIT = 3000  # a section block's text
RATE_BLOCK_ID = "phobos_rate"
RATE_ACTION_IDS = {GOOD: "phobos_rate_good", BAD: "phobos_rate_bad"}
REASON_VIEW_ID = "phobos_rate_reason"  # the modal's callback_id
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "reason_text"
REASON_MAX_CHARS = 500  # what the interaction log keeps of a reason


def answer_blocks(text: str, job_id: str) -> list[dict[str, Any]]:
    """The last answer message as blocks: its text in sections (code fences kept whole), then 👍/👎."""
    sections = [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
                for piece in split_message(text, SECTION_TEXT_LIMIT) if piece.strip()]
    buttons = [{"type": "button", "action_id": RATE_ACTION_IDS[rating], "value": job_id,
                "text": {"type": "plain_text", "text": emoji, "emoji": True}}
               for rating, emoji in ((GOOD, "👍"), (BAD, "👎"))]
    return [*sections, {"type": "actions", "block_id": RATE_BLOCK_ID, "elements": buttons}]


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
