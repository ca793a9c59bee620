"""Prompts that number their sources, ask for citations and allow 'the documents don't say'."""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.citation_markers import mask_quoted
from core.documents import Citation, Hit
from core.generation import ChatMessage

RAG_SYSTEM = (
    "You are Phobos, an assistant that answers questions using only the numbered sources below, which "
    "come from documents shared in this conversation. Cite the sources you use by number in square "
    "brackets, like [1]. If the sources do not contain the answer, say that the shared documents do "
    "not cover it. Be concise."
)
NO_DOCUMENTS_SYSTEM = (
    "You are Phobos, a helpful assistant. No documents have been shared in this conversation, so "
    "answer from general knowledge, briefly, and do not invent citations."
)
SOURCES_HEADER = "Sources:"
QUESTION_HEADER = "Question:"
_SOURCE_LINE = re.compile(r"^\[(\d+)\] \((.+?)\) (.*)$")
_CITED = re.compile(r"\[(\d+)\]")


def source_label(hit: Hit) -> str:
    return Citation.of(hit.chunk).label()


def rag_messages(question: str, hits: Sequence[Hit],
                 history: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
    """System rules, earlier turns of the conversation, then numbered sources and the question."""
    sources = "\n".join(f"[{n}] ({source_label(hit)}) {hit.chunk.text}" for n, hit in enumerate(hits, 1))
    user = f"{SOURCES_HEADER}\n{sources}\n\n{QUESTION_HEADER} {question}"
    return [ChatMessage("system", RAG_SYSTEM), *history, ChatMessage("user", user)]


def plain_messages(question: str, history: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
    return [ChatMessage("system", NO_DOCUMENTS_SYSTEM), *history, ChatMessage("user", question)]


def sources_in(messages: Sequence[ChatMessage]) -> list[tuple[int, str, str]]:
    """(number, label, text) of each source in the last user message built by :func:`rag_messages`."""
    user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    if not user.startswith(SOURCES_HEADER):
        return []
    found = []
    for line in user.splitlines()[1:]:
        match = _SOURCE_LINE.match(line)
        if match:
            found.append((int(match.group(1)), match.group(2), match.group(3)))
    return found


def cited_numbers(answer: str, n_sources: int, sources: Sequence[str] = ()) -> list[int]:
    """Source numbers the answer cites, in order of first mention, ignoring numbers out of range and the
    bracketed numbers it quotes from ``sources`` (the source texts, when known; see core/citation_markers.py)."""
    answer = mask_quoted(answer, sources)
    seen: list[int] = []
    for match in _CITED.finditer(answer):
        number = int(match.group(1))
        if 1 <= number <= n_sources and number not in seen:
            seen.append(number)
    return seen
