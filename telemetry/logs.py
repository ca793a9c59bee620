"""Logging setup for every Phobos process: human lines, or one JSON object per line (PHOBOS_LOG_FORMAT=json).

JSON lines carry the fields that code passes with ``extra=`` (job id, scope, model, timings). Question
and answer text appear only when PHOBOS_LOG_TEXT is on; the formatter drops those fields otherwise, so
a call site cannot leak them by mistake.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

TEXT_FIELDS = ("question", "answer")
FIELDS = ("job_id", "kind", "scope", "model", "outcome", "entry_id", "delivery", "worker_id", "queue_wait_s",
          "first_token_s", "duration_s", "tokens", "pages")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_include_text = False


def include_text() -> bool:
    """Whether job log lines may carry question and answer text (PHOBOS_LOG_TEXT)."""
    return _include_text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the known ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for name in FIELDS + (TEXT_FIELDS if _include_text else ()):
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "text", include_text_fields: bool = False, stream: TextIO | None = None,
              path: Path | None = None) -> None:
    """Send the root logger to ``path`` (appending) or ``stream`` (stderr), in the chosen format."""
    global _include_text
    if fmt not in ("text", "json"):
        raise ValueError(f"PHOBOS_LOG_FORMAT must be 'text' or 'json', not {fmt!r}")
    _include_text = include_text_fields
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
