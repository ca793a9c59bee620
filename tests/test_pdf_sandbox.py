"""Bad input through the sandboxed reader and the whole ingestion: every file gets a clear outcome."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from core.ingest import IngestLimits, ingest_document
from core.pdf import DocumentError
from core.pdf_sandbox import ParseLimits, SandboxedPdf
from tests.pdfs import FACT_PAGES, bomb_pdf, encrypted_pdf, pdf_with_pages, textless_pdf
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=60, overlap_tokens=10,
                      parse_timeout_s=30, parse_memory_mb=512)
FUZZ_CASES = 60
# Words any message about an unusable file contains, so a person knows what happened.
UNDERSTANDABLE = ("empty", "not a PDF", "corrupt", "password", "no pages", "no text", "limit", "longer than",
                  "memory", "could not be read", "gave no text", "more text")


def read_all(data: bytes, limits: ParseLimits | None = None) -> list[str]:
    with SandboxedPdf(data, "upload.pdf", limits or ParseLimits()) as pdf:
        return [page.text for page in pdf.pages()]


def test_pages_stream_in_order_from_the_child() -> None:
    texts = read_all(pdf_with_pages(FACT_PAGES))
    assert len(texts) == 4 and "Skerry Point" in texts[0] and "Hallstatt" in texts[3]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>Download</body></html>", "not a PDF .*web page"),
        (b"%PDF-1.7\n" + b"\x00garbage" * 50, "cannot be opened"),
    ],
)
def test_unusable_bytes_get_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        read_all(data)


def test_encrypted_pdf_is_reported_without_asking_for_a_password() -> None:
    with pytest.raises(DocumentError, match="password-protected"):
        read_all(encrypted_pdf())


def test_scanned_pdf_without_ocr_is_reported() -> None:
    with pytest.raises(DocumentError, match="no text layer"):
        read_all(textless_pdf(), ParseLimits(ocr=False))


def test_page_limit_is_checked_before_reading() -> None:
    with pytest.raises(DocumentError, match="limit is 2"):
        read_all(pdf_with_pages(FACT_PAGES), ParseLimits(max_pages=2))


def test_a_decompression_bomb_is_stopped_by_the_wall_time_limit() -> None:
    with pytest.raises(DocumentError, match="longer than the 2 s"):
        read_all(bomb_pdf(megabytes=400), ParseLimits(timeout_s=2))


def test_a_file_that_expands_in_memory_is_stopped_by_the_memory_limit() -> None:
    with pytest.raises(DocumentError, match="memory"):
        read_all(bomb_pdf(megabytes=400, one_string=True), ParseLimits(max_memory_mb=300, timeout_s=60))


def test_text_limit() -> None:
    with pytest.raises(DocumentError, match="more text"):
        read_all(pdf_with_pages(FACT_PAGES), ParseLimits(max_text_chars=300))


def mutations(seed: int, count: int) -> list[tuple[str, bytes]]:
    """Truncated, bit-flipped, spliced and shuffled versions of a valid PDF."""
    rng = random.Random(seed)
    base = pdf_with_pages(FACT_PAGES)
    cases: list[tuple[str, bytes]] = []
    for i in range(count):
        data = bytearray(base)
        how = i % 4
        if how == 0:
            data = data[:rng.randrange(1, len(data))]
        elif how == 1:
            for _ in range(rng.randrange(1, 50)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 2:
            start = rng.randrange(len(data))
            end = min(len(data), start + rng.randrange(1, 400))
            data = data[:start] + data[end:] if rng.random() < 0.5 else data[:end] + data[start:]
        else:
            blocks = [data[j:j + 256] for j in range(0, len(data), 256)]
            head, rest = blocks[0], blocks[1:]
            rng.shuffle(rest)
            data = head + b"".join(rest)
        cases.append((f"mutant-{i}-{how}.pdf", bytes(data)))
    return cases


def test_fuzzed_files_through_ingestion_each_get_an_outcome_a_person_understands(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    bad = [("empty.pdf", b""), ("page.pdf", b"<html><head><title>Log in</title></head></html>"),
           ("secret.pdf", encrypted_pdf()), ("bomb.pdf", bomb_pdf(megabytes=400)), ("scan.pdf", textless_pdf())]
    outcomes = {"indexed": 0, "refused": 0}
    for name, data in bad + mutations(seed=7, count=FUZZ_CASES):
        try:
            result = ingest_document(data, name, "test:w:fuzz", embedder, store,
                                replace(LIMITS, parse_timeout_s=5))
        except DocumentError as exc:
            message = str(exc)
            assert name in message, message
            assert any(word in message for word in UNDERSTANDABLE), message
            outcomes["refused"] += 1
        else:
            assert result.info.chunks > 0, name
            outcomes["indexed"] += 1
    assert outcomes["refused"] >= len(bad)
    # still healthy afterwards
    result = ingest_document(pdf_with_pages(FACT_PAGES), "facts.pdf", "test:w:fuzz", embedder, store, LIMITS)
    assert result.info.pages == 4


def test_repaired_file_is_indexed_with_a_note(redis_client, embedder) -> None:
    data = pdf_with_pages(FACT_PAGES)
    broken = data.replace(b"startxref", b"startxreF")  # a damaged cross-reference table forces a repair
    result = ingest_document(broken, "facts.pdf", "test:w:repair", embedder, RedisDocumentStore(redis_client), LIMITS)
    assert "repaired" in result.summary()


def test_unreadable_pages_are_named(redis_client, embedder) -> None:
    import pymupdf

    doc = pymupdf.open(stream=pdf_with_pages(FACT_PAGES[:2]), filetype="pdf")
    doc.insert_pdf(pymupdf.open(stream=textless_pdf(), filetype="pdf"), from_page=0, to_page=0)
    data = doc.tobytes()
    limits = replace(LIMITS, ocr=False)
    result = ingest_document(data, "mixed.pdf", "test:w:mixed", embedder, RedisDocumentStore(redis_client), limits)
    assert "No text could be read from page 3" in result.summary()
