"""`phobos search`: the passages each question retrieves from a scope, in this process, without a worker."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TextIO

from core.documents import Citation
from core.index import EmbedderMismatchError
from core.rag import RagEngine
from core.scope import Scope
from core.text_safety import EMPTY_QUESTION_HINT, normalise_question


def search_questions(engine: RagEngine, questions: Iterable[str | bytes], scope: Scope, *, k: int | None = None,
                     as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Show the hits of each question (one JSON line each with ``as_json``); the exit status: 0, or 1 when a
    question was empty or the scope's index was built by another embedder."""
    failures = 0
    for asked in questions:
        question = normalise_question(asked)
        if not question:
            print(f"error: {EMPTY_QUESTION_HINT}", file=err)
            failures += 1
            continue
        try:
            hits = engine.retrieve(question, scope, k=k)
        except EmbedderMismatchError as exc:
            print(f"error: {exc}", file=err)
            return 1
        if as_json:
            print(json.dumps({"question": question, "hits": [
                {"file": h.chunk.file_name, "pages": list(h.chunk.pages), "score": round(h.score, 4),
                 "text": h.chunk.text} for h in hits]}), file=out, flush=True)
            continue
        print(f"Q: {question}", file=out)
        if not hits:
            print("  (no documents in this scope)", file=out)
        for rank, hit in enumerate(hits, 1):
            where = Citation.of(hit.chunk).label()
            print(f"  {rank}. {where}  score={hit.score:.3f}  {hit.chunk.text[:160]}", file=out)
    return 1 if failures else 0
