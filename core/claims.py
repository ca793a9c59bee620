"""Claim checks: is each sentence of an answer supported by the sources it cites?

A sentence is checked against the sources it cites by number ([2]); a sentence that cites none (or only
numbers out of range) is checked against every source the model was shown. It is supported when

1. every *exact term* in it occurs in those sources: numbers, quoted strings, code identifiers (``foo()``,
   ``foo.bar``, ``snake_case``, ``camelCase``, backticked text), options (``--flag``, ``-x``), file names,
   paths and URLs. Text is compared after NFKC, case folding and dash/quote unification, because PDF text
   layers write ``--vanilla`` as an en dash and quotes as curly ones;
2. it says what some passage says: its cosine (with the worker's own embedder) to the best source
   sentence, or window of two or three consecutive sentences, reaches ``min_similarity``; and enough of
   its content words occur in those sources (``min_coverage``). A small embedder rates a sentence that
   swaps one fact for another as close to the original, so word coverage catches what cosine misses.

Short non-claims ("I don't know.", "The documents do not say ...", greetings, lead-ins ending in a colon)
are neither supported nor unsupported. A sentence repeated (same words, citations aside) is removed.

The thresholds are calibrated on the dev split's hand labels only (``bench/claim_check.py``, labels in
``bench/eval/claim_labels.jsonl``); held-out labels only report how they carry over.

Pure Python and numpy: the embedder is passed in, every sentence and source unit is embedded in one batch.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.embedding import Embedder

# ---- sentence splitting ------------------------------------------------------------------------------

# Words after which a period does not end a sentence ("e.g. The", "Fig. 3", "J. Smith" handled apart).
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "cf", "vs", "viz", "al", "approx", "incl", "resp", "fig", "figs", "eq", "eqs",
    "no", "nos", "vol", "p", "pp", "ch", "sec", "dr", "mr", "mrs", "ms", "prof", "st", "ed", "eds", "ref",
    "refs", "min", "max", "e.g.,", "a.k.a", "w.r.t",
})
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_BULLET = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+")
# A citation group: [1], [1, 2], [1-3], [1][2]
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*(?:,|;|-|–|and)\s*\d{1,3})*)\]")
_LEADING_CITATIONS = re.compile(r"^(?:\s*\[\d{1,3}(?:\s*(?:,|;|-|–|and)\s*\d{1,3})*\])+\s*")
# Sentence end: terminal punctuation, closing quotes/brackets, citations after it, then whitespace.
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?:\s*\[\d{1,3}(?:\s*(?:,|;|-|–|and)\s*\d{1,3})*\])*(?=\s+\S)")


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    inherited: tuple[int, ...] = ()  # citations written before the sentence, at the start of its line
    is_code: bool = False


def split_sentences(answer: str) -> list[str]:
    """The answer's sentences, in order: list items and lines apart, code blocks whole, citations kept."""
    return [answer[s.start:s.end] for s in _sentence_spans(answer)]


def _sentence_spans(answer: str) -> list[_Span]:
    spans: list[_Span] = []
    position = 0
    for fence in _FENCE.finditer(answer):
        spans += _prose_spans(answer, position, fence.start())
        spans.append(_Span(fence.start(), fence.end(), is_code=True))
        position = fence.end()
    spans += _prose_spans(answer, position, len(answer))
    return spans


def _prose_spans(text: str, start: int, end: int) -> list[_Span]:
    spans: list[_Span] = []
    offset = start
    for line in text[start:end].split("\n"):
        line_start, offset = offset, offset + len(line) + 1
        prefix = _BULLET.match(line) or _HEADING.match(line)
        body_start = prefix.end() if prefix else 0
        leading = _LEADING_CITATIONS.match(line, body_start)
        inherited: tuple[int, ...] = ()
        if leading:
            inherited = tuple(_numbers_in(leading.group(0)))
            body_start = leading.end()
        # Inline code may hold periods ("x.y. z"); mask it so no sentence ends inside.
        masked = _INLINE_CODE.sub(lambda m: "x" * len(m.group(0)), line)
        piece_start = body_start
        for match in _END.finditer(masked, body_start):
            if not _ends_sentence(masked, match.start(), match.end()):
                continue
            _add(spans, line, line_start, piece_start, match.end(), inherited)
            piece_start = match.end()
        _add(spans, line, line_start, piece_start, len(line), inherited)
    return spans


def _ends_sentence(line: str, punct_at: int, after: int) -> bool:
    following = line[after:].lstrip()
    if following[:1].islower():
        return False
    if line[punct_at] != ".":
        return True
    word = re.search(r"([\w.]+)$", line[:punct_at])
    if not word:
        return True
    token = word.group(1).lower()
    if token in ABBREVIATIONS or token.rstrip(".") in ABBREVIATIONS:
        return False
    return not (len(token) == 1 and word.group(1).isupper())  # an initial: "J. Smith"


def _add(spans: list[_Span], line: str, line_start: int, start: int, end: int, inherited: tuple[int, ...]) -> None:
    piece = line[start:end]
    stripped = piece.strip()
    if not stripped or not re.search(r"\w", _CITATION.sub("", stripped)):
        return
    lead = len(piece) - len(piece.lstrip())
    spans.append(_Span(line_start + start + lead, line_start + start + lead + len(stripped), inherited))


def _numbers_in(citations: str) -> list[int]:
    numbers: list[int] = []
    for group in _CITATION.finditer(citations):
        inner = group.group(1)
        ranged = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", inner)
        if ranged and int(ranged.group(2)) - int(ranged.group(1)) < 20:
            numbers += range(int(ranged.group(1)), int(ranged.group(2)) + 1)
        else:
            numbers += [int(n) for n in re.findall(r"\d+", inner)]
    return numbers


def cited_sources(sentence: str, n_sources: int) -> tuple[int, ...]:
    """The 1-based source numbers a sentence cites, in order, without repeats or numbers out of range."""
    seen: list[int] = []
    for number in _numbers_in(sentence):
        if 1 <= number <= n_sources and number not in seen:
            seen.append(number)
    return tuple(seen)


# ---- normalisation and exact terms -------------------------------------------------------------------

_DASHES = re.compile(r"[\u2010-\u2015\u2212\ufe58\ufe63\uff0d-]+")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "`": "'",
                         "\u00ad": None})
_SPACE = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def normalise(text: str) -> str:
    """NFKC, case-folded, one kind of dash and quote, thousands separators and soft hyphens gone,
    whitespace collapsed: the form in which exact terms are compared."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _DASHES.sub("-", text)
    text = _THOUSANDS.sub("", text)
    return _SPACE.sub(" ", text).strip().casefold()


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")
_ORDINAL_WORDS = ("", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                  "tenth")
_TERM_PATTERNS = (
    ("url", re.compile(r"https?://[^\s<>()\[\]]+[^\s<>()\[\].,;:!?'\"]")),
    ("code", re.compile(r"`([^`\n]+)`")),
    ("quote", re.compile(r"[\"“]([^\"“”\n]{1,160})[\"”]")),
    ("quote", re.compile(r"(?<![\w'’])['‘]([^'‘’\n]{1,80})['’](?![\w'’])")),
    ("option", re.compile(r"(?<![\w\-–—/.])(?:--?|[–—])[A-Za-z][\w\-]*(?:=[\w.\-/]+)?")),
    ("path", re.compile(r"(?<![\w/])(?:~|\.{1,2})?/[\w.\-]+(?:/[\w.\-]+)*/?")),
    ("call", re.compile(r"\b([A-Za-z_][\w.]*\w)\((?:\)|[^()\n]{0,40}\))")),
    ("dotted", re.compile(r"(?<![\w.\-])([A-Za-z_][\w\-]*(?:\.[A-Za-z_]\w*)+)(?![\w(])")),
    ("snake", re.compile(r"\b[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+\b")),
    ("camel", re.compile(r"\b[a-z]+[A-Z][A-Za-z0-9]*\b|\b[A-Z][a-z]+[A-Z][A-Za-z0-9]*\b")),
    ("number", re.compile(r"(?<![\w.])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)*%?")),
)
_DOTTED_WORDS = frozenset({"e.g", "i.e", "et.al", "a.m", "p.m", "u.s", "u.k", "vs", "a.k.a", "w.r.t", "ph.d"})


@dataclass(frozen=True)
class Term:
    kind: str  # url, code, quote, option, path, call, dotted, snake, camel, number
    text: str  # as written in the sentence


def exact_terms(sentence: str) -> list[Term]:
    """The numbers, quotes, identifiers, options, file names, paths and URLs a sentence states."""
    text = _CITATION.sub(" ", sentence)
    taken = [False] * len(text)
    terms: list[Term] = []
    for kind, pattern in _TERM_PATTERNS:
        for match in pattern.finditer(text):
            group = 1 if pattern.groups else 0
            start, end = match.span(group)
            if any(taken[start:end]):
                continue
            value = match.group(group).strip()
            if kind == "dotted" and value.casefold().rstrip(".") in _DOTTED_WORDS:
                continue
            if kind == "number" and not re.search(r"\d", value):
                continue
            if value:
                terms.append(Term(kind, value))
                for i in range(match.start(), match.end()):
                    taken[i] = True
    return terms


def term_occurs(term: Term, source: str) -> bool:
    """Whether ``term`` occurs in ``source`` (already :func:`normalise`\\ d), as a whole token."""
    if term.kind == "number":
        return _number_occurs(term.text, source)
    value = normalise(term.text)
    if term.kind == "call":
        value = value.split("(", 1)[0]
    if term.kind == "option":
        value = "-" + value.lstrip("-")
    if not value:
        return True
    if _occurs_as_token(value, source):
        return True
    # PDF text layers break long identifiers across lines ("read.\ntable"); compare without spaces.
    return len(value) >= 6 and " " not in value and value in source.replace(" ", "")


def _occurs_as_token(value: str, source: str) -> bool:
    pattern = re.escape(value)
    if value[0].isalnum() or value[0] == "_":
        pattern = r"(?<![\w])" + pattern
    if value[-1].isalnum() or value[-1] == "_":
        pattern += r"(?![\w])"
    return re.search(pattern, source) is not None


def _number_occurs(written: str, source: str) -> bool:
    value = normalise(written).lstrip("+")
    if value.endswith("%"):
        value = value[:-1]
    forms = [value]
    if value.lstrip("-").isdigit():
        number = int(value)
        if 0 <= number < len(_NUMBER_WORDS):
            forms.append(_NUMBER_WORDS[number])
        if 1 <= number < len(_ORDINAL_WORDS):
            forms.append(_ORDINAL_WORDS[number])
    elif re.fullmatch(r"\d+\.\d+", value) and value.endswith("0"):
        forms.append(value.rstrip("0").rstrip("."))  # 2.50 is 2.5
    for form in forms:
        digits = form[0].isdigit() or form[0] == "-"
        pattern = (r"(?<![\w.])" if digits else r"\b") + re.escape(form) + (r"(?!\d|\.\d)" if digits else r"\b")
        if re.search(pattern, source):
            return True
    return False


# ---- content words -----------------------------------------------------------------------------------

_STOP_WORDS_TEXT = """
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing done down during each either else even every few for from
further had has have having he her here hers him his how however i if in into is it its itself just let
like may me might more most much must my no nor not now of off on once only or other our out over own per
rather same shall she should since so some such than that the their them then there these they this those
though through thus to too under until up upon us use used uses using very via was we were what when where
whether which while who whom whose why will with within without would yes yet you your one two also many
instead simply allows allow provide provides provided way ways called based example well following
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_WORD = re.compile(r"[a-z][a-z0-9]+")


def _stem(word: str) -> str:
    """A crude stem: enough to match install/installs/installing/installation, nothing more."""
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6]


def content_stems(text: str) -> set[str]:
    """Stems of the words that carry meaning (stop words and one-letter words left out)."""
    return {_stem(w) for w in _WORD.findall(normalise(text)) if w not in STOP_WORDS}


# ---- the check ---------------------------------------------------------------------------------------

_NON_CLAIMS = (
    re.compile(r"\b(?:i|we) (?:do not|don't|cannot|can't) (?:know|say|tell|find|answer)\b"),
    re.compile(r"\b(?:i'm|i am) not sure\b"),
    re.compile(r"\b(?:documents?|sources?|passages?|context|texts?|files?|manual|handbook)\b[^.]{0,60}"
               r"\b(?:do not|don't|does not|doesn't|did not|didn't|cannot|can't|never)\b[^.]{0,20}"
               r"\b(?:say|says|mention|cover|contain|include|provide|specify|state|explain|answer|discuss|describe)"),
    re.compile(r"\b(?:no|not any) (?:information|mention|details?)\b[^.]{0,40}\b(?:in|about|on)\b"),
    re.compile(r"^(?:hi|hello|hey|thanks|thank you|you're welcome|sure|certainly|of course|great question|"
               r"i hope (?:this|that) helps|let me know|feel free|happy to help)\b"),
)
NON_CLAIM_MAX_WORDS = 25  # a refusal or courtesy longer than this is treated as a claim and checked


@dataclass(frozen=True)
class ClaimThresholds:
    """When a sentence counts as supported; calibrated on the dev labels (``bench/claim_check.py``)."""

    min_similarity: float = 0.55  # cosine to the best source sentence or window
    min_coverage: float = 0.5  # share of the sentence's content words found in its sources
    # A sentence this close to a source unit is supported whatever its word coverage (a paraphrase).
    paraphrase_similarity: float = 0.8


@dataclass(frozen=True)
class SentenceCheck:
    text: str
    supported: bool
    cited: tuple[int, ...]  # the source numbers it cites (1-based); () when it cites none
    missing_terms: tuple[str, ...]  # exact terms found in none of the sources it was checked against
    similarity: float  # cosine to the best source unit
    reason: str  # why it is (not) supported, for people: "missing 3.5, --vanilla", "not a claim"
    is_claim: bool = True
    coverage: float = 1.0  # share of its content words found in those sources
    best_source: int = 0  # the source (1-based) holding the closest unit; 0 when none
    start: int = 0  # where it is in the answer: answer[start:end] == text
    end: int = 0


@dataclass(frozen=True)
class AnswerCheck:
    sentences: tuple[SentenceCheck, ...]  # every sentence once, in order (repeats removed)
    support_share: float  # supported claims / claims; 1.0 when the answer makes no claim
    duplicates_removed: int
    answer: str = ""
    removed_spans: tuple[tuple[int, int], ...] = field(default=())  # where the repeats were in ``answer``

    @property
    def claims(self) -> tuple[SentenceCheck, ...]:
        return tuple(s for s in self.sentences if s.is_claim)

    @property
    def unsupported(self) -> tuple[SentenceCheck, ...]:
        return tuple(s for s in self.sentences if s.is_claim and not s.supported)

    @property
    def has_support(self) -> bool:
        """False when the answer makes claims and none of them is supported."""
        return not self.claims or len(self.unsupported) < len(self.claims)


def check_answer(answer: str, sources: Sequence[str], embedder: Embedder,
                 thresholds: ClaimThresholds | None = None) -> AnswerCheck:
    """Check every sentence of ``answer`` against the numbered ``sources`` the model was shown
    (source 1 is ``sources[0]``); see the module docstring for the rules."""
    limits = thresholds or ClaimThresholds()
    spans = _sentence_spans(answer)
    seen: set[str] = set()
    kept: list[_Span] = []
    removed: list[tuple[int, int]] = []
    for span in spans:
        key = _dedupe_key(answer[span.start:span.end])
        if key and key in seen:
            removed.append((span.start, span.end))
            continue
        seen.add(key)
        kept.append(span)

    normalised = [normalise(s) for s in sources]
    stems = [content_stems(s) for s in sources]
    units, unit_source = _source_units(sources)
    claim_rows: list[int] = []
    texts: list[str] = []
    for i, span in enumerate(kept):
        sentence = answer[span.start:span.end]
        if not span.is_code and _is_claim(sentence):
            claim_rows.append(i)
            texts.append(_claim_text(sentence))
    vectors = embedder.embed(texts + units) if texts and units else np.zeros((0, 0), dtype=np.float32)
    sentence_vectors, unit_vectors = vectors[:len(texts)], vectors[len(texts):]
    similarities = sentence_vectors @ unit_vectors.T if len(texts) and len(units) else None  # (claims, units)

    checks: list[SentenceCheck] = []
    row_of = {i: row for row, i in enumerate(claim_rows)}
    for i, span in enumerate(kept):
        sentence = answer[span.start:span.end]
        cited = cited_sources(sentence, len(sources)) or tuple(n for n in span.inherited if 1 <= n <= len(sources))
        if i not in row_of:
            if span.is_code:
                checks.append(_check_code(sentence, span, cited, normalised))
            else:
                checks.append(SentenceCheck(sentence, True, cited, (), 0.0, "not a claim", is_claim=False,
                                            start=span.start, end=span.end))
            continue
        against = [n - 1 for n in cited] or list(range(len(sources)))
        missing = tuple(t.text for t in exact_terms(sentence)
                        if not any(term_occurs(t, normalised[s]) for s in against))
        similarity, best = 0.0, 0
        if similarities is not None:
            row = similarities[row_of[i]]
            allowed = np.isin(unit_source, against)
            if allowed.any():
                column = int(np.argmax(np.where(allowed, row, -np.inf)))
                similarity, best = float(row[column]), int(unit_source[column]) + 1
        words = content_stems(_claim_text(sentence))
        source_words = set().union(*(stems[s] for s in against)) if against else set()
        coverage = len(words & source_words) / len(words) if words else 1.0
        supported, reason = _verdict(missing, similarity, coverage, limits)
        checks.append(SentenceCheck(sentence, supported, cited, missing, round(similarity, 4), reason,
                                    coverage=round(coverage, 4), best_source=best, start=span.start, end=span.end))

    claims = [c for c in checks if c.is_claim]
    share = sum(c.supported for c in claims) / len(claims) if claims else 1.0
    return AnswerCheck(tuple(checks), round(share, 4), len(removed), answer, tuple(removed))


def _verdict(missing: tuple[str, ...], similarity: float, coverage: float,
             limits: ClaimThresholds) -> tuple[bool, str]:
    if missing:
        return False, "not in its sources: " + ", ".join(missing)
    if similarity >= limits.paraphrase_similarity:
        return True, f"close to a source passage (cosine {similarity:.2f})"
    if similarity < limits.min_similarity:
        return False, f"no source passage says this (best cosine {similarity:.2f})"
    if coverage < limits.min_coverage:
        return False, f"most of its words are not in its sources ({coverage:.0%} found)"
    return True, f"supported (cosine {similarity:.2f}, {coverage:.0%} of its words found)"


def _check_code(block: str, span: _Span, cited: tuple[int, ...], normalised: list[str]) -> SentenceCheck:
    """A code block is supported when its identifiers and options occur in the sources."""
    body = re.sub(r"^```\w*\n?|```$", "", block.strip())
    tokens = {t for t in re.findall(r"[A-Za-z_][\w.]*\w|--?[A-Za-z][\w-]*", body) if len(t) > 2}
    against = [n - 1 for n in cited] or list(range(len(normalised)))
    missing = tuple(sorted(t for t in tokens
                           if not any(term_occurs(Term("dotted", t), normalised[s]) for s in against)))
    supported = not missing
    reason = "its names occur in the sources" if supported else "not in its sources: " + ", ".join(missing)
    return SentenceCheck(block, supported, cited, missing, 0.0, reason, start=span.start, end=span.end)


def _is_claim(sentence: str) -> bool:
    text = normalise(_CITATION.sub(" ", sentence)).strip(" *_")
    words = text.split()
    if len(words) < 3 and not exact_terms(sentence):
        return False  # "Yes.", "In short:"
    if text.endswith(":") and len(words) <= 12 and not exact_terms(sentence):
        return False  # a lead-in to a list
    return not (len(words) <= NON_CLAIM_MAX_WORDS and any(p.search(text) for p in _NON_CLAIMS))


def _claim_text(sentence: str) -> str:
    """The sentence as embedded: citations and markdown emphasis left out."""
    return _SPACE.sub(" ", _CITATION.sub(" ", sentence).replace("**", "").replace("`", "")).strip()


def _dedupe_key(sentence: str) -> str:
    return " ".join(re.findall(r"\w+", normalise(_CITATION.sub(" ", sentence))))


# Sentences inside a source: PDF text wraps lines mid-sentence, so line breaks are spaces here.
_SOURCE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
SOURCE_WINDOW_SENTENCES = (1, 2, 3)  # units: each sentence, and runs of two and three
MAX_UNIT_CHARS = 1200  # about the embedder's window; longer units are cut


def _source_units(sources: Sequence[str],
                  widths: Sequence[int] = SOURCE_WINDOW_SENTENCES) -> tuple[list[str], np.ndarray]:
    """Each source's sentences and windows of consecutive sentences, and which source each came from."""
    units: list[str] = []
    owners: list[int] = []
    for number, source in enumerate(sources):
        sentences = [s for s in _SOURCE_SENTENCE_END.split(_SPACE.sub(" ", source).strip()) if s]
        seen: set[str] = set()
        for width in widths:
            for i in range(max(1, len(sentences) - width + 1)):
                unit = " ".join(sentences[i:i + width])[:MAX_UNIT_CHARS]
                if unit and unit not in seen:
                    seen.add(unit)
                    units.append(unit)
                    owners.append(number)
    return units, np.asarray(owners, dtype=np.int64)


QUOTE_MAX_CHARS = 300  # a fallback quote: one or two sentences, cut at this length


def closest_passages(question: str, sources: Sequence[str], embedder: Embedder, count: int) -> list[tuple[int, str]]:
    """(source number, quote) for the ``count`` sources whose best sentence or pair of sentences is closest
    to ``question``, closest first; the quote is that text, cut to ``QUOTE_MAX_CHARS``."""
    units, owners = _source_units(sources, widths=(1, 2))
    if not units:
        return []
    vectors = embedder.embed([question, *units])  # (1 + units, dim)
    scores = vectors[1:] @ vectors[0]
    best: dict[int, int] = {}
    for row in np.argsort(-scores):
        best.setdefault(int(owners[row]), int(row))
        if len(best) == count:
            break
    quotes = []
    for source, row in best.items():
        quote = units[row]
        if len(quote) > QUOTE_MAX_CHARS:
            quote = quote[:QUOTE_MAX_CHARS].rsplit(" ", 1)[0] + " …"
        quotes.append((source + 1, quote))
    return quotes
