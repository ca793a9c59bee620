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


def fact_stated(fact: str, answer: str) -> bool:
    """Whether ``answer`` states ``fact`` (alternatives split by "|"), as whole words where it starts or ends
    with one ("mode" is not found in "model"; "Thursday" is in "Thursdays")."""
    text = normalise(answer)
    for alternative in (normalise(a) for a in fact.split("|")):
        if not alternative:
            continue
        start = r"(?<![\w])" if alternative[0].isalnum() or alternative[0] == "_" else ""
        end = r"(?:s|es)?(?![\w])" if alternative[-1].isalnum() or alternative[-1] == "_" else ""
        if re.search(start + re.escape(alternative) + end, text):
            return True
    return False
