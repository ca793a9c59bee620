from core.chunking import chunk_pages, split_sentences
from core.documents import PageText


def word_count(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_sentences_split_at_full_stops() -> None:
    assert split_sentences("One two. Three four! Is it? Yes.") == ["One two.", "Three four!", "Is it?", "Yes."]


def test_chunks_respect_the_token_limit_and_overlap() -> None:
    pages = [PageText(1, " ".join(f"Sentence {i} has five words." for i in range(40)))]
    chunks = chunk_pages(pages, "d", "f.pdf", word_count, max_tokens=20, overlap_tokens=5)
    assert all(len(c.text.split()) <= 20 for c in chunks)
    # overlap: each chunk starts with the last sentence of the one before
    assert chunks[1].text.startswith(chunks[0].text.split(". ")[-1].rstrip("."))


def test_chunk_across_a_page_break_cites_both_pages() -> None:
    pages = [PageText(1, "The first page ends here."), PageText(2, "The second page starts here.")]
    (chunk,) = chunk_pages(pages, "d", "f.pdf", word_count, max_tokens=50, overlap_tokens=0)
    assert chunk.pages == (1, 2)


def test_an_over_long_sentence_is_cut_not_truncated() -> None:
    words = [f"w{i}" for i in range(100)]
    chunks = chunk_pages([PageText(3, " ".join(words))], "d", "f.pdf", word_count, max_tokens=30,
                         overlap_tokens=0)
    assert all(len(c.text.split()) <= 30 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == words
    assert {c.page_start for c in chunks} == {3}
