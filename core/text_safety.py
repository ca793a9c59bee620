"""Text from people and from files, made safe to show and to embed: one rule, called from every surface.

- A question (:func:`normalise_question`): invalid UTF-8 becomes U+FFFD (a command line or a pipe hands
  Python undecodable bytes as lone surrogates, which the embedder's tokenizer refuses with a TypeError);
  terminal escape sequences, control characters other than line breaks and tabs, and the bidirectional
  overrides and isolates that make text read differently from how it is stored, are removed. What is
  left empty is no question: the caller answers :data:`EMPTY_QUESTION_HINT` instead of queueing it.
  Console, Slack, Discord and the CLI's ``ask``/``search`` call it, the queue (jobs/client.py) before
  admission and the worker before embedding.
- A name (:func:`escape_name`): a file name or title is shown with its control, bidi and unpaired
  surrogate characters escaped (``\\x1b``, ``\\u202e``), so a name cannot repaint a terminal or reverse
  the text after it, and the person still sees that the name holds them.
- Document text loses the same bidi characters in :func:`core.pdf.clean_text`, so what is indexed and
  quoted reads as it is stored.
"""

from __future__ import annotations

import re

# Embedding, overrides and isolates (LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI), the marks, the Arabic mark.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
EMPTY_QUESTION_HINT = ("That question is empty (nothing is left once control characters are removed). "
                       "Ask something about the documents shared here, for example "
                       "\"What does the handbook say about backups?\"")
_SURROGATES = re.compile("[\ud800-\udfff]")
# A terminal escape sequence as a whole (CSI "\x1b[31m", OSC "\x1b]0;title\x07"), so no "[31m" is left behind.
_TERMINAL_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
_REMOVED_FROM_QUESTIONS = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{BIDI_CONTROLS}]")
_ESCAPED_IN_NAMES = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{BIDI_CONTROLS}\ud800-\udfff]")


def normalise_question(text: str | bytes) -> str:
    """``text`` as valid Unicode, without control or bidi characters, stripped; "" when nothing is left."""
    text = valid_unicode(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _REMOVED_FROM_QUESTIONS.sub("", _TERMINAL_SEQUENCE.sub("", text)).strip()


def valid_unicode(text: str | bytes) -> str:
    """Bytes decoded as UTF-8, and undecodable bytes (or unpaired surrogates) replaced by U+FFFD."""
    if isinstance(text, bytes):
        return text.decode("utf-8", "replace")
    if not _SURROGATES.search(text):
        return text
    try:  # bytes smuggled in by the surrogateescape error handler (argv, a pipe): decode them properly
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (e.g. "\ud800" from JSON)
        return _SURROGATES.sub("\ufffd", text)


def escape_name(name: str) -> str:
    """``name`` with control, bidi and unpaired surrogate characters written as escapes (``\\x1b``)."""
    return _ESCAPED_IN_NAMES.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), name)
