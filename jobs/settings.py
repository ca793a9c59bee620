"""The job queue's settings, as adapters and ``phobos ask`` submit to it: one section (``settings.queue``),
turned into :class:`jobs.admission.AdmissionLimits` in one place (:meth:`QueueSettings.admission_limits`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from core.env_settings import EnvSection, env

if TYPE_CHECKING:
    from jobs.admission import AdmissionLimits


class QueueSettings(EnvSection):
    # A job not finished this long after it was submitted gets an "expired" reply instead of an answer.
    job_deadline_s: float = Field(900.0, validation_alias=env("PHOBOS_JOB_DEADLINE_S"))
    # Per-user token bucket: questions a user may send at once, and how many it earns back per minute.
    rate_burst: int = Field(5, validation_alias=env("PHOBOS_RATE_BURST"))
    rate_per_min: float = Field(10.0, validation_alias=env("PHOBOS_RATE_PER_MIN"))
    # Jobs queued or running, in all and per user, beyond which new ones are refused with a reply.
    max_queue_depth: int = Field(1000, validation_alias=env("PHOBOS_MAX_QUEUE_DEPTH"))
    max_queued_per_user: int = Field(5, validation_alias=env("PHOBOS_MAX_QUEUED_PER_USER"))

    def admission_limits(self) -> AdmissionLimits:
        from jobs.admission import AdmissionLimits  # not at import: reading settings loads no Redis client

        return AdmissionLimits(rate_burst=self.rate_burst, rate_per_min=self.rate_per_min,
                               max_queue_depth=self.max_queue_depth, max_queued_per_user=self.max_queued_per_user)
