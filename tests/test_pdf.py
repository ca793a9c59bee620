import pytest

from core.pdf import DocumentError, clean_text, extract_pages
from tests.pdfs import FACT_PAGES, encrypted_pdf, pdf_with_pages, textless_pdf


def test_pages_keep_their_numbers_and_text() -> None:
    pages = extract_pages(pdf_with_pages(FACT_PAGES), "facts.pdf")
    assert [p.number for p in pages] == [1, 2, 3, 4]
    assert "Skerry Point" in pages[0].text and "Hallstatt" in pages[3].text


def test_clean_text_joins_hyphenated_words_and_ligatures() -> None:
    assert clean_text("retrie-\nval of the \ufb01le\n\nnext  line") == "retrieval of the file next line"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "not a PDF"),
        (b"just some notes\n", "not a PDF"),
        (b"%PDF-1.7\n" + b"\x00garbage" * 50, "cannot be opened"),
    ],
)
def test_unusable_bytes_get_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        extract_pages(data, "upload.pdf")


def test_encrypted_pdf_is_reported() -> None:
    with pytest.raises(DocumentError, match="password"):
        extract_pages(encrypted_pdf(), "board.pdf")


def test_pdf_without_text_is_reported_not_indexed_empty() -> None:
    with pytest.raises(DocumentError, match="no text layer"):
        extract_pages(textless_pdf(), "scan.pdf")


def test_page_limit() -> None:
    with pytest.raises(DocumentError, match="limit is 2"):
        extract_pages(pdf_with_pages(FACT_PAGES), "facts.pdf", max_pages=2)
