import numpy as np

from core.cleaning import RawPage, strip_running_lines
from core.documents import Chunk
from core.hybrid import LexicalIndex, fused_scores, hybrid_search, reciprocal_rank_fusion
from core.index import ScopeIndex
from core.navigation import is_navigation


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


def _chunks(texts: list[str]) -> list[Chunk]:
    return [Chunk("d", "f.pdf", t, 1, 1, i) for i, t in enumerate(texts)]


def test_the_clear_dense_favourite_is_not_outranked_by_a_passage_sharing_common_words() -> None:
    # An everyday-words question: the answer (0) shares no word with it, passage 1 shares "copy" and "machine".
    texts = ["Large transfers: use the data transfer node.", "Copy files to the machine with the copy tool.",
             *[f"Unrelated passage number {i} about gardening." for i in range(2, 20)]]
    question = "How do I copy a huge dataset onto the machine?"
    dense = np.full(len(texts), 0.20, dtype=np.float32) + np.linspace(0, 0.02, len(texts), dtype=np.float32)
    dense[0], dense[1] = 0.62, 0.30
    lexical = LexicalIndex(texts)
    assert hybrid_search(_chunks(texts), dense, lexical, question, k=1, fusion="rrf")[0].chunk.ordinal == 1
    hits = hybrid_search(_chunks(texts), dense, lexical, question, k=3)
    assert hits[0].chunk.ordinal == 0  # RRF (above) put passage 1 first
    assert hits[1].chunk.ordinal == 1


def test_a_rare_exact_word_wins_when_the_dense_side_has_no_favourite() -> None:
    texts = [f"Passage {i} about applying functions over lists." for i in range(10)]
    texts[6] = "vapply checks the type of each result."
    dense = np.full(len(texts), 0.30, dtype=np.float32) + np.linspace(0, 0.01, len(texts), dtype=np.float32)
    hits = hybrid_search(_chunks(texts), dense, LexicalIndex(texts), "when should I use vapply", k=1)
    assert hits[0].chunk.ordinal == 6


def test_fused_scores_handle_a_scope_with_no_lexical_match_or_one_passage() -> None:
    assert fused_scores(np.array([0.5, 0.1], np.float32), np.zeros(2, np.float32)).argmax() == 0
    assert fused_scores(np.array([0.5], np.float32), np.array([1.0], np.float32)).shape == (1,)


def test_a_table_of_contents_ranks_below_the_page_it_points_to() -> None:
    toc = ("Contents 1 Storage . . . . . . . . 3 2 Quotas . . . . . . . . 5 3 Quota warnings . . . . . . . . 6 "
           "4 Transfers . . . . . . . . 7 5 Help . . . . . . . . 9 6 Index . . . . . . . . 11")
    texts = [toc, "When you go over quota, writes fail and running jobs crash.",
             *[f"Unrelated passage {i} about gardening." for i in range(2, 12)]]
    assert is_navigation(toc) and not is_navigation(texts[1])
    chunks = _chunks(texts)
    index = ScopeIndex(chunks, np.eye(len(texts), dtype=np.float32))
    query_vector = np.zeros(len(texts), np.float32)
    query_vector[0], query_vector[1] = 0.6, 0.55  # the contents page is a slightly better dense match
    hits = index.hybrid_search(query_vector / np.linalg.norm(query_vector), "what happens over quota", k=2)
    assert [h.chunk.ordinal for h in hits] == [1, 0]
