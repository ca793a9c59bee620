"""Passages that only point elsewhere: a table of contents or an index, told apart by dot leaders.

Such a passage names every topic of the document, so it matches many questions a little, yet the answer
is never on it: it is on the page it points to. Retrieval ranks these passages below the content ones
(core.hybrid) instead of dropping them, so a question about the layout itself can still reach them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# ". . . . ." or "......": the leaders between a heading and its page number.
_DOT_LEADER = re.compile(r"(?:\.\s){4,}|\.{5,}")
MIN_LEADERS = 5  # a passage with this many leader runs lists headings and pages, not content


def is_navigation(text: str) -> bool:
    """True for a passage of table-of-contents or index lines."""
    return len(_DOT_LEADER.findall(text)) >= MIN_LEADERS


def navigation_mask(texts: Sequence[str]) -> np.ndarray:
    """:func:`is_navigation` for each text, shape (len(texts),)."""
    return np.fromiter((is_navigation(t) for t in texts), dtype=bool, count=len(texts))
