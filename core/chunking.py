"""Page texts -> chunks bounded by the embedder's real token limit, with overlap and page spans."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.documents import Chunk, PageText, span_label
from core.headings import section_at

# Units whose parts stand alone (a slide, a section under its heading): a chunk never runs from one into
# the next. Pages and paragraphs do run on, so a passage split by the layout stays together.
SELF_CONTAINED_UNITS = ("section", "slide")
SECTION_RESERVE_TOKENS = 40  # room left in the embedder's window for the section path embedded with a chunk

# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or opening bracket/quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
# A list item starts at a bullet glyph: slides and itemised lists have no full stops between items.
_BULLET = re.compile(r"\s+(?=[\u2022\u00b7\u25aa\u2023\u25e6\u25cf\u25a0\u27a2\u25ba\u2713\u2714]\s)")


@dataclass(frozen=True)
class _Sentence:
    text: str
    page: int
    tokens: int
    label: str = ""
    section: str = ""


def split_sentences(text: str) -> list[str]:
    return [s for part in _SENTENCE_END.split(text) for s in (item.strip() for item in _BULLET.split(part)) if s]


def chunk_pages(
    pages: Sequence[PageText],
    doc_id: str,
    file_name: str,
    count_tokens: Callable[[list[str]], list[int]],
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Pack whole sentences into chunks of at most ``max_tokens`` embedder tokens.

    Chunks run across page breaks so a passage split by the layout stays together; such a chunk cites
    both pages. Consecutive chunks share up to ``overlap_tokens`` of trailing sentences. A single
    sentence longer than the limit is cut into word windows so nothing is silently truncated.
    """
    chunker = Chunker(doc_id, file_name, count_tokens, max_tokens, overlap_tokens)
    return chunker.add(pages) + chunker.finish()


class Chunker:
    """:func:`chunk_pages` for pages that arrive a slice at a time: feed slices with :meth:`add`, then
    call :meth:`finish`. The chunks are the same as one call over all pages gives."""

    def __init__(self, doc_id: str, file_name: str, count_tokens: Callable[[list[str]], list[int]],
                 max_tokens: int, overlap_tokens: int, break_at_parts: bool = False):
        self.doc_id = doc_id
        self.break_at_parts = break_at_parts  # sections and slides: a chunk never runs into the next one
        self.file_name = file_name
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.produced = 0
        self._current: list[_Sentence] = []
        self._current_tokens = 0

    def add(self, pages: Sequence[PageText]) -> list[Chunk]:
        """Chunks completed by these pages; the last, still open chunk waits for the next slice."""
        chunks: list[Chunk] = []
        for sentence in _sentences(pages, self.count_tokens, self.max_tokens):
            if self._current and self.break_at_parts and sentence.page != self._current[-1].page:
                chunks.append(self._emit())
                self._current, self._current_tokens = [], 0
            if self._current and self._current_tokens + sentence.tokens > self.max_tokens:
                chunks.append(self._emit())
                self._current = _overlap_tail(self._current, self.overlap_tokens,
                                              self.max_tokens - sentence.tokens)
                self._current_tokens = sum(s.tokens for s in self._current)
            self._current.append(sentence)
            self._current_tokens += sentence.tokens
        return chunks

    def state(self) -> dict[str, object]:
        """What :meth:`restore` needs to go on where this chunker stands (JSON-ready): an ingest
        interrupted between slices resumes with the same chunks it would have made."""
        return {"produced": self.produced, "open": [[s.text, s.page, s.tokens] for s in self._current]}

    def restore(self, state: dict[str, object]) -> None:
        self.produced = int(state["produced"])  # type: ignore[call-overload]
        self._current = [_Sentence(text, page, tokens) for text, page, tokens in state["open"]]  # type: ignore[attr-defined]
        self._current_tokens = sum(s.tokens for s in self._current)

    def finish(self) -> list[Chunk]:
        if not self._current:
            return []
        chunk = self._emit()
        self._current, self._current_tokens = [], 0
        return [chunk]

    def _emit(self) -> Chunk:
        chunk = _make_chunk(self._current, self.doc_id, self.file_name, self.produced)
        self.produced += 1
        return chunk


def _sentences(pages: Sequence[PageText], count_tokens: Callable[[list[str]], list[int]],
               max_tokens: int) -> list[_Sentence]:
    texts: list[str] = []
    page_of: list[PageText] = []
    section_of: list[str] = []
    for page in pages:
        position = 0
        for sentence in split_sentences(page.text):
            found = page.text.find(sentence, position)
            position = found if found >= 0 else position
            texts.append(sentence)
            page_of.append(page)
            section_of.append(section_at(page.sections, position))
    counts = count_tokens(texts) if texts else []
    result: list[_Sentence] = []
    for text, page, section, tokens in zip(texts, page_of, section_of, counts, strict=True):
        if tokens <= max_tokens:
            result.append(_Sentence(text, page.number, tokens, page.label, section))
        else:
            result.extend(_split_long(text, page.number, tokens, max_tokens, count_tokens, page.label, section))
    return result


def _split_long(text: str, page: int, tokens: int, max_tokens: int,
                count_tokens: Callable[[list[str]], list[int]], label: str = "",
                section: str = "") -> list[_Sentence]:
    """Cut an over-long 'sentence' (a table, a run-on list) into word windows that fit."""
    words = text.split()
    parts = max(2, -(-tokens // max_tokens) + 1)
    while True:
        size = max(1, -(-len(words) // parts))
        windows = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
        counts = count_tokens(windows)
        if max(counts) <= max_tokens or size == 1:
            return [_Sentence(w, page, c, label, section) for w, c in zip(windows, counts, strict=True)]
        parts *= 2


def _overlap_tail(sentences: list[_Sentence], overlap_tokens: int, room: int) -> list[_Sentence]:
    tail: list[_Sentence] = []
    total = 0
    for sentence in reversed(sentences):
        if total + sentence.tokens > min(overlap_tokens, room):
            break
        tail.insert(0, sentence)
        total += sentence.tokens
    return tail


def _make_chunk(sentences: list[_Sentence], doc_id: str, file_name: str, ordinal: int) -> Chunk:
    # A chunk across a heading takes the section that holds most of its tokens.
    weights: Counter[str] = Counter()
    for s in sentences:
        weights[s.section] += s.tokens
    return Chunk(
        doc_id=doc_id,
        file_name=file_name,
        text=" ".join(s.text for s in sentences),
        page_start=min(s.page for s in sentences),
        page_end=max(s.page for s in sentences),
        ordinal=ordinal,
        location=span_label(sentences[0].label, sentences[-1].label),
        section=weights.most_common(1)[0][0],
    )
