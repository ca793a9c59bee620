"""Helpers for the feedback tests of both platforms: wait for a rating to be logged, export the log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from jobs.interactions import InteractionLog, RatedAnswer
from tests.conftest import ROOT, phobos_env

RATING_WAIT_S = 60.0  # the worker records the answer just after posting it


def wait_for_rating(redis_client: redis.Redis, predicate: Callable[[RatedAnswer], Any]) -> None:
    """Poll the interaction log until its first rated answer satisfies ``predicate`` (or the wait ends;
    the caller's assertions then say what is missing)."""
    deadline = time.monotonic() + RATING_WAIT_S
    while time.monotonic() < deadline:
        rated = InteractionLog(redis_client).rated_answers()
        if rated and predicate(rated[0]):
            return
        time.sleep(0.05)


def export_feedback(redis_url: str) -> tuple[str, list[dict[str, Any]]]:
    """`phobos feedback export` run for real: its raw output and the JSON lines in it."""
    exported = subprocess.run([sys.executable, "-m", "phobos", "feedback", "export"], env=phobos_env(redis_url),
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    print(exported.stdout)  # the exported lines, for the record
    return exported.stdout, [json.loads(raw) for raw in exported.stdout.splitlines()]
