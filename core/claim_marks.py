"""What a reader sees of the claim check: marks on unsupported sentences, one count line, the quote fallback.

Written once for every platform. The marks are plain Unicode and markdown that read the same in Slack
mrkdwn, Discord markdown and a terminal: a warning sign before each sentence its sources do not
support, and a last line saying how many there were. Nothing here depends on a platform's formatting
(no italics or strikethrough, whose syntax differs between Slack and Discord).

Modes (``PHOBOS_CLAIMS``): ``mark`` (the default) keeps unsupported sentences, marked; ``drop`` leaves
them out and says how many were left out; ``off`` shows the answer as the model wrote it. In both
checking modes a repeated sentence is removed, and an answer none of whose claims is supported becomes
a short quote of the passages closest to the question, with their citations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.claims import AnswerCheck, ClaimThresholds, check_answer, closest_passages
from core.documents import Citation
from core.embedding import Embedder
from core.rag import EMPTY_ANSWER_REPLY, Answer, citations_for

MODES = ("mark", "drop", "off")
MARK = "⚠️"
FALLBACK_PASSAGES = 2
FALLBACK_INTRO = ("The sources do not support what the model wrote, so here are the passages closest to "
                  "your question instead:")
_EMPTY_LINE = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)]|#{1,6})?[ \t]*(?:\[\d+(?:[,\s]+\d+)*\][ \t]*)*$")


@dataclass(frozen=True)
class CheckedAnswer:
    """An answer after its claim check: the text to post, its citations and what the check found."""

    text: str
    citations: tuple[Citation, ...]
    check: AnswerCheck
    mode: str
    is_fallback: bool  # no claim was supported: ``text`` quotes the closest passages instead


def source_texts(answer: Answer) -> list[str]:
    """The numbered sources as the model saw them: label, then passage (core.prompt.rag_messages)."""
    return [f"({Citation.of(hit.chunk).label()}) {hit.chunk.text}" for hit in answer.sources]


def is_checkable(answer: Answer) -> bool:
    """Only an answer written from sources can be checked against them."""
    return answer.grounded and bool(answer.sources) and answer.text != EMPTY_ANSWER_REPLY


def review(answer: Answer, question: str, embedder: Embedder, mode: str = "mark",
           thresholds: ClaimThresholds | None = None) -> CheckedAnswer | None:
    """Check ``answer`` against its sources and render it for ``mode``; None when off or not checkable."""
    if mode not in MODES:
        raise ValueError(f"claim check mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "off" or not is_checkable(answer):
        return None
    check = check_answer(answer.text, source_texts(answer), embedder, thresholds)
    if not check.has_support:
        text, citations = quote_fallback(question, answer, embedder)
        return CheckedAnswer(text, citations, check, mode, is_fallback=True)
    text = render(check, mode)
    citations = citations_for(text, answer.sources) if mode == "drop" else answer.citations
    return CheckedAnswer(text, citations, check, mode, is_fallback=False)


def render(check: AnswerCheck, mode: str) -> str:
    """The answer with repeats removed and unsupported sentences marked (``mark``) or left out (``drop``),
    followed by the line that counts them."""
    answer = check.answer
    edits = [(start, end, "remove") for start, end in check.removed_spans]
    edits += [(s.start, s.end, "remove" if mode == "drop" else "mark") for s in check.unsupported]
    pieces: list[str] = []
    position = 0
    for start, end, action in sorted(edits):
        pieces.append(answer[position:start])
        if action == "mark":
            sentence = answer[start:end]
            pieces.append(f"{MARK}\n{sentence}" if sentence.startswith("```") else f"{MARK} {sentence}")
        position = end
    pieces.append(answer[position:])
    text = _tidy("".join(pieces))
    note = count_line(check, mode)
    return f"{text}\n\n{note}" if note else text


def count_line(check: AnswerCheck, mode: str) -> str:
    """One line: how many sentences the sources do not support, and what was done with them."""
    unsupported, claims = len(check.unsupported), len(check.claims)
    if not unsupported:
        return ""
    were = "was" if unsupported == 1 else "were"
    done = "left out" if mode == "drop" else f"marked {MARK}"
    return f"{MARK} {unsupported} of {claims} sentences {were} not found in the sources and {were} {done}."


def quote_fallback(question: str, answer: Answer, embedder: Embedder) -> tuple[str, tuple[Citation, ...]]:
    """A short quote of the passages closest to ``question``, each cited; numbered as its citations."""
    passages = closest_passages(question, [hit.chunk.text for hit in answer.sources], embedder, FALLBACK_PASSAGES)
    lines = [FALLBACK_INTRO]
    citations: list[Citation] = []
    for source, quote in passages:
        citation = Citation.of(answer.sources[source - 1].chunk)
        if citation not in citations:
            citations.append(citation)
        lines.append(f"> {quote} [{citations.index(citation) + 1}]")
    return "\n".join(lines), tuple(citations)


def summary(check: AnswerCheck) -> dict[str, object]:
    """Plain numbers for logs and the interaction log."""
    return {"support_share": check.support_share, "claims": len(check.claims),
            "unsupported": len(check.unsupported), "duplicates_removed": check.duplicates_removed}


def _tidy(text: str) -> str:
    """Lines emptied by removals go (a bullet with nothing after it, a citation alone), spaces are joined."""
    lines = []
    in_code = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```") or line.lstrip().startswith(f"{MARK} ```"):
            in_code = not in_code if line.count("```") % 2 else in_code
        elif not in_code:
            if line.strip() and _EMPTY_LINE.match(line):
                continue
            line = re.sub(r"(?<=\S)[ \t]{2,}", " ", line).rstrip()
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
