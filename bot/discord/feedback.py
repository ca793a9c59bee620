"""👍/👎 on Discord answers: the two buttons a final answer carries and the "what was wrong?" modal.

The buttons' custom_ids carry the rating and the job id (``phobos:rate:bad:<job id>``), so a click
is understood from the interaction alone, also after the adapter restarts: :func:`record_feedback`, called
from the adapter's ``on_interaction``, handles them instead of a view kept per message in memory.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.ratings import rater_id, record_rating
from jobs.interactions import BAD, GOOD, RATINGS, AsyncRatings

RATE_PREFIX = "phobos:rate:"
REASON_PREFIX = "phobos:reason:"
REASON_INPUT_ID = "reason"
REASON_MAX_CHARS = 500  # what the interaction log keeps of a reason
CUSTOM_ID_CHARS = 100  # Discord's limit on a component's custom_id


def rating_view(job_id: str) -> discord.ui.View:
    """The buttons for the answer to ``job_id``: a finished view, so discord.py never stores it."""
    view = discord.ui.View(timeout=None)
    for rating, emoji in ((GOOD, "👍"), (BAD, "👎")):
        view.add_item(discord.ui.Button(style=discord.ButtonStyle.secondary, emoji=emoji,
                                        custom_id=f"{RATE_PREFIX}{rating}:{job_id}"[:CUSTOM_ID_CHARS]))
    view.stop()  # clicks are handled in on_interaction from the custom_id alone
    return view


def parse_rating(custom_id: str) -> tuple[str, str] | None:
    """(rating, job id) from a button's custom_id, or None for a component that is not ours."""
    if not custom_id.startswith(RATE_PREFIX):
        return None
    rating, _, job_id = custom_id.removeprefix(RATE_PREFIX).partition(":")
    return (rating, job_id) if rating in RATINGS and job_id else None


class ReasonModal(discord.ui.Modal):
    """The modal a 👎 opens: one optional line; its submission is handled in on_interaction too."""

    reason: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What was wrong? (optional)", custom_id=REASON_INPUT_ID, required=False,
        max_length=REASON_MAX_CHARS, style=discord.TextStyle.short)

    def __init__(self, job_id: str):
        super().__init__(title="What was wrong?", custom_id=f"{REASON_PREFIX}{job_id}"[:CUSTOM_ID_CHARS],
                         timeout=15 * 60)


def parse_reason(data: dict[str, Any]) -> tuple[str, str] | None:
    """(job id, reason) from a modal submission's data, or None for a modal that is not ours."""
    custom_id = str(data.get("custom_id", ""))
    if not custom_id.startswith(REASON_PREFIX):
        return None
    reason = ""
    for row in data.get("components", []):
        for component in row.get("components", []):
            if component.get("custom_id") == REASON_INPUT_ID:
                reason = str(component.get("value") or "")
    return custom_id.removeprefix(REASON_PREFIX), reason


async def record_feedback(interaction: discord.Interaction, ratings: AsyncRatings) -> None:
    """A 👍/👎 click or the reason modal's submission: answered at once, then recorded; other interactions
    (slash commands are the command tree's) are left alone."""
    data: dict[str, Any] = dict(interaction.data or {})
    if interaction.type is discord.InteractionType.component:
        parsed = parse_rating(str(data.get("custom_id", "")))
        if parsed is None:
            return
        rating, job_id = parsed
        # Answer first: Discord drops an interaction not acknowledged within 3 seconds.
        if rating == BAD:
            await interaction.response.send_modal(ReasonModal(job_id))
        else:
            await interaction.response.send_message("Thanks for the rating.", ephemeral=True)
        await record_rating(ratings, "discord", job_id, rating, _rater_of(interaction))
    elif interaction.type is discord.InteractionType.modal_submit:
        reason = parse_reason(data)
        if reason is None:
            return
        job_id, text = reason
        await interaction.response.send_message("Thanks, noted.", ephemeral=True)
        if text.strip():
            await record_rating(ratings, "discord", job_id, BAD, _rater_of(interaction), text, is_new=False)


def _rater_of(interaction: discord.Interaction) -> str:
    """``discord:GUILD:USER`` (``dm`` for the guild of a direct message)."""
    return rater_id("discord", interaction.guild_id, interaction.user.id)
