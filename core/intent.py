"""Questions about the shared documents as a whole ("what is this about?", "summarise it").

Such questions share few words with any one passage, so similarity search ranks passages poorly and the
relevance floor would refuse them; they are answered from the opening passages of each document instead.
"""

from __future__ import annotations

import re

_DOCUMENT = r"(?:document|doc|pdf|file|paper|report|manual|handbook|book|article|text)s?"
_OVERVIEW = re.compile(
    r"\b(?:summar(?:y|ise|ize)|overview|tl;?dr|gist"
    rf"|what\s+(?:is|are)\s+(?:this|these|the|that|those)\s+{_DOCUMENT}\s+about"
    rf"|what\s+(?:does|do)\s+(?:this|these|the|that|those)\s+{_DOCUMENT}\s+(?:say|cover|contain|describe)"
    rf"|what(?:'s|\s+is)\s+in\s+(?:this|these|the|that|those)\s+{_DOCUMENT})\b",
    re.IGNORECASE,
)
OPENING_CHUNKS_PER_DOCUMENT = 2


def is_overview_question(question: str) -> bool:
    """True for questions about the documents as a whole rather than about something in them."""
    return bool(_OVERVIEW.search(question))
