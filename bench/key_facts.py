"""Key facts: the short things a correct answer must state, checked in an answer after normalisation.

A fact is a number, a function or option name or a short phrase from the gold answer and its page
(bench/eval/*.jsonl ``key_facts``); "a|b" is stated when either alternative is.
"""

from __future__ import annotations

import re
import unicodedata

_DASHES = str.maketrans({"‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "−": "-",
                         "“": '"', "”": '"', "‘": "'", "’": "'", "`": ""})


def normalise(text: str) -> str:
    """NFKC, one kind of dash and quote, no backticks, one space, lower case: how a reader compares text."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).translate(_DASHES)).strip().lower()


def fact_stated(fact: str, answer: str, question: str = "") -> bool:
    """Whether ``answer`` states ``fact`` (alternatives split by "|"), as whole words where it starts or ends
    with one ("mode" is not found in "model"; "Thursday" is in "Thursdays"). An identifier or acronym
    (a capital letter inside a word: LANGUAGE, vcovHC, HC3) must keep its case, so an answer that only
    repeats the question's "language" does not state LANGUAGE. An alternative the ``question`` itself
    contains is not evidence and is skipped."""
    for alternative in (a.strip() for a in fact.split("|")):
        if not alternative or (question and fact_stated(alternative, question)):
            continue
        exact_case = bool(_INNER_CAPITAL.search(alternative))
        text, wanted = _fold(answer, exact_case), _fold(alternative, exact_case)
        start = r"(?<![\w])" if wanted[0].isalnum() or wanted[0] == "_" else ""
        end = r"(?:s|es)?(?![\w])" if wanted[-1].isalnum() or wanted[-1] == "_" else ""
        if re.search(start + re.escape(wanted) + end, text):
            return True
    return False


_INNER_CAPITAL = re.compile(r"\w[A-Z]")


def _fold(text: str, exact_case: bool) -> str:
    folded = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).translate(_DASHES)).strip()
    return folded if exact_case else folded.lower()
