from bot.render import format_sources, split_message
from core.documents import Citation


def test_short_text_is_one_piece() -> None:
    assert split_message("hello world", 2000) == ["hello world"]


def test_long_text_splits_at_words_within_limit() -> None:
    text = " ".join(f"word{i}" for i in range(1500))
    pieces = split_message(text, 2000)
    assert all(len(p) <= 2000 for p in pieces)
    assert " ".join(pieces).split() == text.split()  # no word lost or cut


def test_code_block_is_closed_and_reopened() -> None:
    text = "Intro.\n```python\n" + "print('x')\n" * 400 + "```\nDone."
    pieces = split_message(text, 2000)
    assert len(pieces) > 1
    assert all(p.count("```") % 2 == 0 for p in pieces)
    assert pieces[1].startswith("```python\n")


def test_sources_block_numbers_each_citation() -> None:
    block = format_sources([Citation("a.pdf", (1,)), Citation("b.pdf", (3, 4))], link=lambda c: None)
    assert block.splitlines() == ["Sources:", "[1] a.pdf, p. 1", "[2] b.pdf, pp. 3-4"]
