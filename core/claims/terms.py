"""The words a claim is compared by: normalised text, exact terms (numbers, identifiers, options, quotes,
paths), and the stems of its content words."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from core.citation_markers import CITATION

_DASHES = re.compile(r"[\u2010-\u2015\u2212\ufe58\ufe63\uff0d-]+")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "`": "'",
                         "\u00ad": None})
SPACE = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def normalise(text: str) -> str:
    """NFKC, case-folded, one kind of dash and quote, thousands separators and soft hyphens gone,
    whitespace collapsed: the form in which exact terms are compared."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _DASHES.sub("-", text)
    text = _THOUSANDS.sub("", text)
    return SPACE.sub(" ", text).strip().casefold()


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
    # Two names joined by a slash ("gcc/clang", "C/C++"): each must occur; "and/or" is no term.
    ("slash", re.compile(r"(?<![\w/.:])[A-Za-z][\w+#.\-]*/[A-Za-z0-9][\w+#.\-]*(?<![.\-])(?![\w/])")),
    ("call", re.compile(r"\b([A-Za-z_][\w.]*\w)\((?:\)|[^()\n]{0,40}\))")),
    ("dotted", re.compile(r"(?<![\w.\-])([A-Za-z_][\w\-]*(?:\.[A-Za-z_]\w*)+)(?![\w(])")),
    ("snake", re.compile(r"\b[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+\b")),
    ("camel", re.compile(r"\b[a-z]+[A-Z][A-Za-z0-9]*\b|\b[A-Z][a-z]+[A-Z][A-Za-z0-9]*\b")),
    ("number", re.compile(r"(?<![\w.])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)*%?")),
    # A capitalised name inside a sentence (not its first word): a product, a person, a system. Small
    # models invent them ("Visual Studio", "Ubuntu") next to a true statement, and cosine does not notice.
    ("name", re.compile(r"(?<=[\w,;)] )[A-Z][\w+#]*[A-Za-z0-9+#](?:[ -][A-Z][\w+#]*)*")),
)
_SLASH_WORDS = frozenset({"and/or", "n/a", "w/o", "i/o", "either/or", "he/she", "his/her", "yes/no", "on/off"})
_DOTTED_WORDS = frozenset({"e.g", "i.e", "et.al", "a.m", "p.m", "u.s", "u.k", "vs", "a.k.a", "w.r.t", "ph.d"})


@dataclass(frozen=True)
class Term:
    kind: str  # url, code, quote, option, path, call, dotted, snake, camel, number, slash, name
    text: str  # as written in the sentence


def exact_terms(sentence: str) -> list[Term]:
    """The numbers, quotes, identifiers, options, file names, paths and URLs a sentence states."""
    text = CITATION.sub(" ", sentence)
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
            if kind == "slash" and value.casefold() in _SLASH_WORDS:
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
    if term.kind == "slash" and term_occurs(Term("dotted", term.text), source):
        return True  # written the same way in the source
    if term.kind == "slash":
        return all(term_occurs(Term("dotted", part), source) for part in term.text.split("/") if part)
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

