import numpy as np

from core.cleaning import RawPage, strip_running_lines
from core.documents import Chunk
from core.hybrid import LexicalIndex, reciprocal_rank_fusion
from core.index import ScopeIndex


def test_rrf_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 1, 4])])
    assert [item for item, _ in fused][:2] == [1, 3]


def test_bm25_finds_a_rare_exact_word() -> None:
    texts = ["Closures capture their environment.", "Use vapply when the result type is known.",
             "Environments are mutable."]
    scores = LexicalIndex(texts).scores("what does vapply do")
    assert int(np.argmax(scores)) == 1


def test_hybrid_search_keeps_cosine_as_the_score() -> None:
    chunks = [Chunk("d", "f.pdf", t, 1, 1, i) for i, t in enumerate(["apples and pears", "vapply returns"])]
    index = ScopeIndex(chunks, np.asarray([[1, 0], [0, 1]], dtype=np.float32))
    hits = index.hybrid_search(np.asarray([1, 0], np.float32), "vapply", k=2)
    assert {h.chunk.ordinal for h in hits} == {0, 1}
    assert {round(h.score, 3) for h in hits} == {1.0, 0.0}


def test_running_headers_and_page_numbers_are_removed() -> None:
    bodies = ["Vectors hold atoms.", "Lists hold anything.", "Closures capture.", "Promises delay.",
              "Environments nest.", "Symbols name.", "Calls are language.", "Pairlists are old."]
    pages = [RawPage(n, ["Chapter 2: Objects", str(n + 4), body, "R Language Definition"])
             for n, body in enumerate(bodies, start=1)]
    cleaned = list(strip_running_lines(pages))
    assert [p.number for p in cleaned] == list(range(1, 9))
    assert [p.lines for p in cleaned] == [[body] for body in bodies]


def test_a_line_on_one_page_only_stays() -> None:
    pages = [RawPage(1, ["Introduction", "Some text."]), RawPage(2, ["Methods", "Other text."]),
             RawPage(3, ["Results", "More text."])]
    assert [p.lines for p in strip_running_lines(pages)] == [p.lines for p in pages]
