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

from core.claims.check import AnswerCheck, ClaimThresholds, SentenceCheck, check_answer, verdict
from core.claims.sentences import cited_sources, split_sentences
from core.claims.sources import closest_passages
from core.claims.terms import Term, content_stems, exact_terms, normalise, term_occurs

__all__ = ["AnswerCheck", "ClaimThresholds", "SentenceCheck", "Term", "check_answer", "cited_sources",
           "closest_passages", "content_stems", "exact_terms", "normalise", "split_sentences", "term_occurs",
           "verdict"]
