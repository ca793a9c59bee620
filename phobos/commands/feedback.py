"""`phobos feedback`: rated answers from the interaction log, as eval questions (JSONL) or good shares."""

from __future__ import annotations

import argparse
import json
import sys

from phobos import runtime
from phobos.settings import Settings


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.interactions import InteractionLog, export_rated, rating_stats

    with runtime.redis_url(settings) as url:
        rated = InteractionLog(runtime.connect(url, settings)).rated_answers()
    if args.action == "stats":
        rows = rating_stats(rated)
        print(f"{'week':<10} {'model':<24} {'good':>5} {'bad':>5} {'good share':>10}")
        for row in rows:
            print(f"{row['week']:<10} {row['model']:<24} {row['good']:>5} {row['bad']:>5} {row['good_share']:>10.0%}")
        if not rows:
            print("No rated answers yet.")
        return 0
    if args.rating != "all":
        rated = [item for item in rated if item.rating == args.rating]
    lines, without_text = export_rated(rated)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    print(f"{len(lines)} rated question(s) exported.", file=sys.stderr)
    if without_text:
        print(f"{without_text} rated answer(s) left out: their question text was not kept "
              "(set PHOBOS_LOG_TEXT=true to keep it).", file=sys.stderr)
    return 0
