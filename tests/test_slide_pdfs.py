"""A presentation exported to PDF is read as slides: one passage per slide, cited as "slide N"."""

from __future__ import annotations

from core.chunking import split_sentences
from core.ingest import IngestLimits, ingest_document
from core.pdf_sandbox import ParseLimits, SandboxedPdf
from tests.pdfs import DECK_SLIDES, FACT_PAGES, pdf_with_pages, slide_deck_pdf
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=250, overlap_tokens=30,
                      parse_timeout_s=60, parse_memory_mb=512)


def read(data: bytes) -> tuple[str, list[tuple[int, str]]]:
    with SandboxedPdf(data, "deck.pdf", ParseLimits(ocr=False)) as pdf:
        pages = [(page.number, page.label) for page in pdf.pages()]
        return pdf.unit, pages


def test_a_landscape_deck_of_short_pages_is_read_as_slides() -> None:
    unit, pages = read(slide_deck_pdf(DECK_SLIDES))
    assert unit == "slide"
    assert pages == [(n, f"slide {n}") for n in range(1, len(DECK_SLIDES) + 1)]


def test_portrait_pages_and_landscape_pages_full_of_text_stay_pages() -> None:
    assert read(pdf_with_pages(FACT_PAGES))[0] == "page"
    # A landscape report: wide pages, but each holds a page of prose, not a slide's few lines.
    prose = " ".join(FACT_PAGES) * 2
    dense = slide_deck_pdf([(f"Report part {n}", [prose[i:i + 90] for i in range(0, 1400, 90)])
                            for n in range(1, 4)], width=842, height=595)
    assert read(dense)[0] == "page"


def test_each_slide_is_its_own_passage_and_is_cited_as_a_slide(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    result = ingest_document(slide_deck_pdf(DECK_SLIDES), "deck.pdf", "test:w:deck", embedder, store, LIMITS)
    assert result.info.unit == "slide" and "5 slides" in result.summary()
    index = store.load_index("test:w:deck", embedder.dim)
    assert sorted((c.page_start, c.page_end, c.location) for c in index.chunks) == \
        [(n, n, f"slide {n}") for n in range(1, len(DECK_SLIDES) + 1)]
    question = embedder.embed(["What happens when I go over my disk quota?"])[0]
    best = index.hybrid_search(question, "What happens when I go over my disk quota?", k=1)[0]
    assert best.chunk.location == "slide 3" and "writes fail" in best.chunk.text


def test_bulleted_items_are_separate_sentences() -> None:
    text = "Checking Your Quota \u00b7 Run: quota-report \u00b7 Warnings arrive by email at 90%. Then more."
    assert split_sentences(text) == ["Checking Your Quota", "\u00b7 Run: quota-report",
                                     "\u00b7 Warnings arrive by email at 90%.", "Then more."]
