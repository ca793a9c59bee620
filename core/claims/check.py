"""The check itself: each sentence of an answer against the sources it cites, and the verdict."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.citation_markers import CITATION, mask_quoted, unmask
from core.claims.sentences import Span, cited_sources, sentence_spans
from core.claims.sources import candidate_units, source_units
from core.claims.terms import SPACE, Term, content_stems, exact_terms, normalise, term_occurs
from core.embedding import Embedder

_NON_CLAIMS = (
    re.compile(r"\b(?:i|we) (?:do not|don't|cannot|can't) (?:know|say|tell|find|answer)\b"),
    re.compile(r"\b(?:i'm|i am) not sure\b"),
    re.compile(r"\b(?:documents?|sources?|passages?|context|texts?|files?|manual|handbook)\b[^.]{0,60}"
               r"\b(?:do not|don't|does not|doesn't|did not|didn't|cannot|can't|never)\b[^.]{0,20}"
               r"\b(?:say|says|mention|cover|contain|include|provide|specify|state|explain|answer|discuss|describe|"
               r"support)"),
    re.compile(r"\b(?:no|not any) (?:information|mention|details?)\b[^.]{0,40}\b(?:in|about|on)\b"),
    re.compile(r"^(?:hi|hello|hey|thanks|thank you|you're welcome|sure|certainly|of course|great question|"
               r"i hope (?:this|that) helps|let me know|feel free|happy to help)\b"),
)
NON_CLAIM_MAX_WORDS = 25  # a refusal or courtesy longer than this is treated as a claim and checked


@dataclass(frozen=True)
class ClaimThresholds:
    """When a sentence counts as supported; calibrated on the dev labels (``bench/claim_check.py``)."""

    min_similarity: float = 0.725  # cosine to the best source sentence or window
    min_coverage: float = 0.55  # share of the sentence's content words found in its sources
    # A sentence this close to a source unit is supported whatever its word coverage (a paraphrase).
    paraphrase_similarity: float = 0.75


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
    # Sentences and citations are read from ``answer`` with the bracketed numbers it quotes from a source
    # (R's "[1]", a paper's "[12]") masked, so they are not taken for citations; offsets stay the same.
    original, answer = answer, mask_quoted(answer, sources)
    spans = sentence_spans(answer)
    seen: set[str] = set()
    kept: list[Span] = []
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
    units, unit_source, unit_width = source_units(sources)
    unit_stems = [content_stems(u) for u in units]
    everything = list(range(len(sources)))
    against_of: dict[int, list[int]] = {}
    cited_of: dict[int, tuple[int, ...]] = {}
    # Each claim is judged by its weakest clause: a model often joins a true clause and an invented one
    # with a semicolon, and the true half alone would make the whole sentence look close to a source.
    clauses: dict[int, list[str]] = {}  # kept index -> its clauses (the sentence itself when it has one)
    candidates: dict[tuple[int, int], list[int]] = {}  # (kept index, clause) -> source units to compare with
    lead_in = ""  # the sentence ending in a colon that the list items below it complete
    for i, span in enumerate(kept):
        sentence = answer[span.start:span.end]
        cited = cited_sources(sentence, len(sources)) or tuple(n for n in span.inherited if 1 <= n <= len(sources))
        cited_of[i], against_of[i] = cited, [n - 1 for n in cited] or everything
        if span.is_code:
            continue
        if _is_claim(sentence):
            clauses[i] = _clauses(_claim_text(sentence))
        elif span.is_item and lead_in and _is_fragment(sentence):
            # "The platforms are:" then "- Windows": the item alone says nothing; with its lead-in it claims.
            clauses[i] = [lead_in + " " + _claim_text(sentence)]
        if not span.is_item:
            lead_in = _claim_text(sentence).rstrip(":").strip() if _is_lead_in(sentence) else ""
        if i in clauses:
            for c, clause in enumerate(clauses[i]):
                candidates[(i, c)] = candidate_units(content_stems(clause), against_of[i], unit_stems,
                                                      unit_source, unit_width)
    # One batch: every clause and every unit some clause needs; a unit shared by clauses is embedded once.
    needed = sorted({u for chosen in candidates.values() for u in chosen})
    column = {u: c for c, u in enumerate(needed)}
    clause_order = list(candidates)
    texts = [clauses[i][c] for i, c in clause_order]
    vectors = embedder.embed(texts + [units[u] for u in needed]) if texts else np.zeros((0, 0), np.float32)
    similarities = vectors[:len(texts)] @ vectors[len(texts):].T if needed else None  # (clauses, needed units)
    row_of = {key: row for row, key in enumerate(clause_order)}
    source_words_of = {i: set().union(*(stems[s] for s in against_of[i])) if against_of[i] else set()
                       for i in clauses}

    checks: list[SentenceCheck] = []
    for i, span in enumerate(kept):
        sentence, shown = answer[span.start:span.end], original[span.start:span.end]
        cited, against = cited_of[i], against_of[i]
        if i not in clauses:
            if span.is_code:
                checks.append(_check_code(shown, span, cited, normalised))
            else:
                checks.append(SentenceCheck(shown, True, cited, (), 0.0, "not a claim", is_claim=False,
                                            start=span.start, end=span.end))
            continue
        missing = tuple(t.text for t in exact_terms(unmask(sentence))
                        if not any(term_occurs(t, normalised[s]) for s in against))
        similarity, best, coverage = 1.0, 0, 1.0
        for c, clause in enumerate(clauses[i]):
            clause_similarity, clause_best = 0.0, 0
            if similarities is not None and candidates[(i, c)]:
                scored = [(float(similarities[row_of[(i, c)], column[u]]), u) for u in candidates[(i, c)]]
                clause_similarity, unit = max(scored)
                clause_best = int(unit_source[unit]) + 1
            if clause_similarity < similarity:
                similarity, best = clause_similarity, clause_best
            words = content_stems(clause)
            coverage = min(coverage, len(words & source_words_of[i]) / len(words) if words else 1.0)
        quoted = _quoted_in(sentence, [(s, normalised[s]) for s in against])
        if quoted:  # word for word in a source: a quote, whatever the embedder makes of its context
            similarity, best = 1.0, quoted
        supported, reason = verdict(missing, similarity, coverage, limits)
        checks.append(SentenceCheck(shown, supported, cited, missing, round(similarity, 4), reason,
                                    coverage=round(coverage, 4), best_source=best, start=span.start, end=span.end))

    claims = [c for c in checks if c.is_claim]
    share = sum(c.supported for c in claims) / len(claims) if claims else 1.0
    return AnswerCheck(tuple(checks), round(share, 4), len(removed), original, tuple(removed))


def verdict(missing: tuple[str, ...], similarity: float, coverage: float,
            limits: ClaimThresholds) -> tuple[bool, str]:
    """Whether a claim with these measurements is supported under ``limits``, and why, for people."""
    if missing:
        return False, "not in its sources: " + ", ".join(missing)
    if similarity >= limits.paraphrase_similarity:
        return True, f"close to a source passage (cosine {similarity:.2f})"
    if similarity < limits.min_similarity:
        return False, f"no source passage says this (best cosine {similarity:.2f})"
    if coverage < limits.min_coverage:
        return False, f"most of its words are not in its sources ({coverage:.0%} found)"
    return True, f"supported (cosine {similarity:.2f}, {coverage:.0%} of its words found)"


def _check_code(block: str, span: Span, cited: tuple[int, ...], normalised: list[str]) -> SentenceCheck:
    """A code block is supported when its identifiers and options occur in the sources."""
    body = re.sub(r"^```\w*\n?|```$", "", block.strip())
    tokens = {t for t in re.findall(r"[A-Za-z_][\w.]*\w|--?[A-Za-z][\w-]*", body) if len(t) > 2}
    against = [n - 1 for n in cited] or list(range(len(normalised)))
    missing = tuple(sorted(t for t in tokens
                           if not any(term_occurs(Term("dotted", t), normalised[s]) for s in against)))
    supported = not missing
    reason = "its names occur in the sources" if supported else "not in its sources: " + ", ".join(missing)
    return SentenceCheck(block, supported, cited, missing, 0.0, reason, start=span.start, end=span.end)


QUOTE_MIN_CHARS = 20  # a sentence this long found word for word in a source is a quote of it


def _quoted_in(sentence: str, sources: list[tuple[int, str]]) -> int:
    """The source (1-based) holding ``sentence`` word for word, citations and end punctuation aside; 0 if none."""
    text = normalise(unmask(CITATION.sub(" ", sentence))).strip(" .;:!?")
    if len(text) < QUOTE_MIN_CHARS:
        return 0
    return next((number + 1 for number, source in sources if text in source), 0)


def _is_claim(sentence: str) -> bool:
    text = normalise(CITATION.sub(" ", sentence)).strip(" *_.")
    words = text.split()
    if len(words) < 3 and not exact_terms(sentence):
        return False  # "Yes.", "In short:"
    if text.endswith(":") and len(words) <= 12 and not exact_terms(sentence):
        return False  # a lead-in to a list
    return not (len(words) <= NON_CLAIM_MAX_WORDS and any(p.search(text) for p in _NON_CLAIMS))


def _is_lead_in(sentence: str) -> bool:
    return normalise(CITATION.sub(" ", sentence)).strip(" *_").endswith(":")


def _is_fragment(sentence: str) -> bool:
    """A list item too short to claim anything by itself ("Windows", "gcc 12")."""
    return len(normalise(CITATION.sub(" ", sentence)).strip(" *_.").split()) < 3


CLAUSE_MIN_WORDS = 4  # a shorter piece between semicolons is no claim of its own ("e.g.; see below")


def _clauses(text: str) -> list[str]:
    """The clauses of a claim, split at semicolons; the whole text when only one would be long enough."""
    pieces = [p.strip() for p in text.split(";")]
    long_enough = [p for p in pieces if len(p.split()) >= CLAUSE_MIN_WORDS]
    return long_enough if len(long_enough) > 1 else [text]


def _claim_text(sentence: str) -> str:
    """The sentence as embedded: citations and markdown emphasis left out."""
    return SPACE.sub(" ", unmask(CITATION.sub(" ", sentence)).replace("**", "").replace("`", "")).strip()


def _dedupe_key(sentence: str) -> str:
    return " ".join(re.findall(r"\w+", normalise(CITATION.sub(" ", sentence))))

