"""OCR in the sandboxed reader: which pages are recognised, the settings that turn it off or choose the engine."""

from __future__ import annotations

import pytest

from core.ocr import available, is_garbage
from core.pdf import DocumentError
from core.pdf_sandbox import ParseLimits, SandboxedPdf
from tests.pdfs import FACT_PAGES, pdf_with_pages, scanned_pdf


def read(data: bytes, limits: ParseLimits) -> tuple[list[str], list[int]]:
    with SandboxedPdf(data, "scan.pdf", limits) as pdf:
        texts = [page.text for page in pdf.pages()]
        return texts, list(pdf.ocr_pages)


def test_scanned_pages_are_recognised_and_text_pages_are_not() -> None:
    import pymupdf

    doc = pymupdf.open(stream=pdf_with_pages(FACT_PAGES[:1]), filetype="pdf")
    doc.insert_pdf(pymupdf.open(stream=scanned_pdf(FACT_PAGES[1:2]), filetype="pdf"))
    texts, ocr_pages = read(doc.tobytes(), ParseLimits())
    assert ocr_pages == [2]
    assert "Skerry Point" in texts[0] and "twelve hives" in texts[1]


def test_each_recognised_page_adds_its_allowance_to_the_time_limit() -> None:
    limits = ParseLimits(timeout_s=300, ocr_page_s=45)
    with SandboxedPdf(scanned_pdf(FACT_PAGES[:2]), "scan.pdf", limits) as pdf:
        assert pdf.allowed_s == 300
        texts = [page.text for page in pdf.pages()]
        assert pdf.ocr_pages == [1, 2] and "twelve hives" in texts[1]
        assert pdf.allowed_s == 300 + 2 * 45  # a long scan is not stopped by the limit for text layers
    with SandboxedPdf(pdf_with_pages(FACT_PAGES[:2]), "text.pdf", limits) as pdf:
        list(pdf.pages())
        assert pdf.allowed_s == 300


def test_ocr_off_reports_the_scan_as_unreadable() -> None:
    with pytest.raises(DocumentError, match="no text layer"):
        read(scanned_pdf(FACT_PAGES[:1]), ParseLimits(ocr=False))


@pytest.mark.skipif(available("tesseract"), reason="Tesseract is installed here")
def test_choosing_an_engine_that_is_not_installed_says_so() -> None:
    with pytest.raises(DocumentError, match="OCR\\) is not installed"):
        read(scanned_pdf(FACT_PAGES[:1]), ParseLimits(ocr_engine="tesseract"))


def test_a_garbage_text_layer_is_told_from_text() -> None:
    assert is_garbage(["\ufffd\ufffd \ue000\ue001\ue002 " * 10])
    assert is_garbage(["\x01\x02\x03\x04" * 10])
    assert not is_garbage([FACT_PAGES[0]])
    assert not is_garbage(["x <- f(a, b) # 1.5e-3 + {$} " * 3])  # code is text too
    assert not is_garbage(["\ufffd"])  # too short to judge
