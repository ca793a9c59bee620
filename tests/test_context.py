import numpy as np

from core.context import assemble_context, join_overlapping
from core.documents import Chunk, Hit
from core.index import ScopeIndex


def word_count(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def make_index(texts: list[str], vectors: list[list[float]]) -> ScopeIndex:
    chunks = [Chunk("d", "f.pdf", text, i + 1, i + 1, i) for i, text in enumerate(texts)]
    return ScopeIndex(chunks, np.asarray(vectors, dtype=np.float32))


def test_join_overlapping_drops_the_repeated_sentences() -> None:
    assert join_overlapping("A b. C d. E f.", "E f. G h.") == "A b. C d. E f. G h."
    assert join_overlapping("A b.", "C d.") == "A b. C d."


def test_adjacent_hits_become_one_passage_citing_both_pages() -> None:
    index = make_index(["One. Two.", "Two. Three.", "Far away."], [[1, 0], [1, 0], [0, 1]])
    hits = [Hit(index.chunks[1], 0.9), Hit(index.chunks[0], 0.8)]
    (passage,) = assemble_context(hits, index, np.array([1, 0], np.float32), word_count, 100)
    assert passage.chunk.text == "One. Two. Three." and passage.chunk.pages == (1, 2)


def test_a_neighbour_is_added_only_when_it_is_close_to_the_question() -> None:
    index = make_index(["Before.", "The hit.", "After."], [[0.95, 0.31], [1, 0], [0, 1]])
    query = np.array([1, 0], np.float32)
    (passage,) = assemble_context([Hit(index.chunks[1], 1.0)], index, query, word_count, 100)
    assert passage.chunk.text == "Before. The hit."


def test_budget_keeps_the_best_passages() -> None:
    index = make_index(["a b c d", "e f g h", "i j k l"], [[1, 0], [0, 1], [1, 0]])
    hits = [Hit(index.chunks[2], 0.9), Hit(index.chunks[0], 0.5)]
    kept = assemble_context(hits, index, np.array([0, 0], np.float32), word_count, 5, add_neighbours=False)
    assert [h.chunk.ordinal for h in kept] == [2]
