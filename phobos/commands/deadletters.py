"""`phobos dlq`: jobs that failed too often (workers/deadletter.py): list them, queue them again, or drop them."""

from __future__ import annotations

import argparse
import sys

from phobos import runtime
from phobos.settings import Settings


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from workers import deadletter

    with runtime.redis_url(settings) as url:
        client = runtime.connect(url, settings)
        dead = deadletter.list_dead(client, count=10_000)
        if args.action == "list":
            for entry in dead:
                job = entry.job()
                what = f"{job.id} {job.kind} by {job.user}: {job.text[:60]!r}" if job else entry.job_json[:80]
                print(f"{entry.dead_id}  {entry.deliveries} deliveries  {entry.reason}  {what}")
            print(f"{len(dead)} dead-lettered job(s)")
            return 0
        if not args.ids:
            print(f"Name the entries to {args.action} (ids from `phobos dlq list`), or 'all'.", file=sys.stderr)
            return 2
        ids = [entry.dead_id for entry in dead] if args.ids == ["all"] else args.ids
        failures = 0
        for dead_id in ids:
            if args.action == "retry":
                new_id = deadletter.retry(client, dead_id)
                print(f"{dead_id}: queued again as {new_id}" if new_id else f"{dead_id}: not found")
                failures += new_id is None
            else:
                is_dropped = deadletter.drop(client, dead_id)
                print(f"{dead_id}: dropped" if is_dropped else f"{dead_id}: not found")
                failures += not is_dropped
    return 1 if failures else 0
