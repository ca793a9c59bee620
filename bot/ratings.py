"""A 👍/👎 from any platform: who rated, in one id format, and the record and metric, written once.

Each platform finds the workspace and user in its own payload; what is kept is the same everywhere:
``PLATFORM:WORKSPACE:USER`` (``dm`` where there is no workspace), so a second rating by the same person
replaces the first, and a reason replaces the bare 👎 it explains.
"""

from __future__ import annotations

from jobs.interactions import AsyncRatings
from telemetry import metrics

NO_WORKSPACE = "dm"


def rater_id(platform: str, workspace: str | int | None, user: str | int) -> str:
    return f"{platform}:{workspace or NO_WORKSPACE}:{user}"


async def record_rating(ratings: AsyncRatings, platform: str, job_id: str, rating: str, rater: str,
                        reason: str = "", *, is_new: bool = True) -> None:
    """Keep the rating (with its reason, when one was given); a new one (not the reason for a 👎 already
    counted) is counted for /metrics."""
    await ratings.rate(job_id, rating, rater, reason)
    if is_new:
        metrics.feedback_rating(platform, rating)
