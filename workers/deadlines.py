"""Time limits on a job, enforced from outside the thread that generates.

The watchdog sets the generator's ``cancel`` event when time is up. A generator that still has not
returned ``stuck_grace_s`` later cannot be stopped from Python, so the watchdog ends the process:
the job's lease then lapses and another worker (or the dead-letter stream) deals with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

STUCK_GRACE_S = 10.0
STUCK_EXIT_CODE = 70  # EX_SOFTWARE


def seconds_left(deadline_at: float | None, limit_s: float) -> float:
    """The smaller of ``limit_s`` and the time until ``deadline_at`` (unix seconds)."""
    if deadline_at is None:
        return limit_s
    return min(limit_s, deadline_at - time.time())


class Watchdog(threading.Thread):
    """``with Watchdog(cancel, 30.0) as dog: ...``; afterwards ``dog.fired`` says whether time ran out."""

    def __init__(self, cancel: threading.Event, limit_s: float, stuck_grace_s: float = STUCK_GRACE_S):
        super().__init__(name="watchdog", daemon=True)
        self.cancel = cancel
        self.limit_s = limit_s
        self.stuck_grace_s = stuck_grace_s
        self.fired = False
        self._done = threading.Event()

    def run(self) -> None:
        if self._done.wait(max(0.0, self.limit_s)):
            return
        self.fired = True
        self.cancel.set()
        if self._done.wait(self.stuck_grace_s):
            return
        log.critical("generation ignored its stop request for %.0f s; exiting so the job is retried "
                     "elsewhere", self.stuck_grace_s)
        logging.shutdown()
        os._exit(STUCK_EXIT_CODE)

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
