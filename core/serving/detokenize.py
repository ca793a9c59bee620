"""Text from a growing list of token ids, piece by piece, without decoding the whole answer each step.

Each step decodes only the tokens since the last emitted piece plus a few before them (so a tokenizer
that drops a word's leading space at the start of a decode still gets it right), and holds back text
that ends in an unfinished UTF-8 character (U+FFFD).
"""

from __future__ import annotations

from collections.abc import Callable

Decode = Callable[[list[int]], str]  # token ids -> text, special tokens skipped


class IncrementalDetokenizer:
    def __init__(self, decode: Decode):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0  # ids[prefix_offset:read_offset] were emitted; decoded again for context
        self._read_offset = 0

    def add(self, token_id: int) -> str:
        """The new text that ``token_id`` completes; may be empty."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        text = self._decode(self._ids[self._prefix_offset:])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return text[len(prefix):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of the answer."""
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        text = self._decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix):] if len(text) > len(prefix) else ""
