"""Word, PowerPoint, Markdown, text and HTML files through the sandboxed reader and ingestion, with the
real embedder and Redis store; hostile Office packages are refused with a reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.documents import span_label
from core.generation import GenerationParams
from core.ingest import IngestLimits, ingest_document
from core.pdf import DocumentError
from core.rag import RagEngine
from core.scope import Scope
from tests.office_files import SECTIONS, docx_with_sections, macro_docx, pptx_with_slides, xxe_docx, zip_bomb_docx
from tests.test_rag import ScriptedGenerator
from workers.store import RedisDocumentStore

LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=40, overlap_tokens=0,
                      parse_timeout_s=60, parse_memory_mb=1024)
MARKDOWN = "\n".join(f"## {heading}\n\n{text}\n" for heading, text in SECTIONS)
TEXT = "\n\n".join(f"{heading}.\n{text}" for heading, text in SECTIONS)  # paragraphs at lines 1-2, 4-5, 7-8, 10-11
HTML = ("<html><head><title>Field station</title></head><body><nav>Home | About | Contact</nav><article>"
        + "".join(f"<h2>{heading}</h2><p>{text}</p>" for heading, text in SECTIONS)
        + "</article><footer>Copyright the station</footer></body></html>")


def top_citation(redis_client, embedder, data: bytes, name: str, question: str, channel: str):  # type: ignore[no-untyped-def]
    store = RedisDocumentStore(redis_client)
    scope = Scope("test", "formats", channel)
    result = ingest_document(data, name, scope.key, embedder, store, LIMITS)
    engine = RagEngine(embedder, store, top_k=1)
    answer = engine.answer(question, scope, ScriptedGenerator("It says so [1]."), GenerationParams(), lambda t: None)
    (citation,) = answer.citations
    return result, citation


def test_a_docx_cites_the_section_under_its_heading(redis_client, embedder) -> None:
    result, citation = top_citation(redis_client, embedder, docx_with_sections(), "handbook.docx",
                                    "What colour is the crater lake of Mount Kessler?", "docx")
    assert citation.file_name == "handbook.docx"
    assert citation.location == "§ Volcano field guide"
    assert citation.label() == "handbook.docx, § Volcano field guide"
    assert "Indexed handbook.docx: 5 sections" in result.summary()  # four headings, then the table's own section


def test_a_docx_table_is_indexed(redis_client, embedder) -> None:
    _, citation = top_citation(redis_client, embedder, docx_with_sections(), "handbook.docx",
                               "Which radio channel does the North hut use?", "docx-table")
    assert citation.location == "§ Railway timetable"  # the table follows the last heading


def test_a_pptx_cites_the_slide(redis_client, embedder) -> None:
    result, citation = top_citation(redis_client, embedder, pptx_with_slides(), "talk.pptx",
                                    "Where does the night train to Hallstatt leave from?", "pptx")
    assert citation.label() == "talk.pptx, slide 4"
    assert "Indexed talk.pptx: 4 slides" in result.summary()


def test_markdown_cites_its_heading(redis_client, embedder) -> None:
    _, citation = top_citation(redis_client, embedder, MARKDOWN.encode(), "notes.md",
                               "How many hives are in the apiary?", "md")
    assert citation.label() == "notes.md, § Beekeeping notes"


def test_plain_text_cites_a_line_range(redis_client, embedder) -> None:
    _, citation = top_citation(redis_client, embedder, TEXT.encode("cp1252"), "notes.txt",
                               "When was the lighthouse lens made?", "txt")
    first, last = (int(n) for n in citation.location.removeprefix("lines ").split("-"))
    assert first == 1 and last in (2, 5)  # the lighthouse paragraph, perhaps with the next one
    assert "lens was made in 1872" in "\n".join(TEXT.splitlines()[first - 1:last])


def test_html_upload_keeps_the_main_text_and_cites_headings(redis_client, embedder) -> None:
    result, citation = top_citation(redis_client, embedder, HTML.encode(), "station.html",
                                    "When does the night train arrive?", "html")
    assert citation.label() == "station.html, § Railway timetable"
    store = RedisDocumentStore(redis_client)
    texts = " ".join(c.text for c in store.load_index(result.info.scope_key, embedder.dim).chunks)
    assert "platform nine" in texts and "Contact" not in texts  # navigation left out


@pytest.mark.parametrize(("data", "name", "reason"), [
    (zip_bomb_docx(megabytes=20), "bomb.docx", "decompression bomb"),
    (xxe_docx(), "entity.docx", "external-entity reference"),
    (macro_docx(), "macro.docx", "contains macros"),
    (b"not a zip at all", "fake.pptx", "is not a valid .pptx file"),
    (b"PK\x03\x04" + b"\0" * 100, "broken.docx", "ZIP package is damaged"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 200, "tool.exe", "formats I index are PDF (.pdf), Word (.docx)"),
    (b"<x/>", "sheet.xlsx", "formats I index are"),
    (b"old", "report.doc", "old binary Word file"),
    (b"PK\x03\x04", "macros.docm", "macro-enabled"),
    (b"\0\0\0binary", "notes.txt", "is binary data"),
    (b"", "empty.docx", "is empty"),
])
def test_unsafe_or_unknown_files_are_refused_with_the_reason(redis_client, embedder, data, name, reason) -> None:
    store = RedisDocumentStore(redis_client)
    with pytest.raises(DocumentError) as refused:
        ingest_document(data, name, "test:formats:refused", embedder, store, LIMITS)
    assert name in str(refused.value) and reason in str(refused.value)
    assert store.list_documents(["test:formats:refused"]) == []  # nothing indexed from it


def test_an_entity_in_an_office_file_is_never_expanded() -> None:
    """Behind the DTD refusal, the XML parser python-docx uses does not resolve entities either."""
    from core.office import docx_parts

    text = " ".join(part.text for part in docx_parts(xxe_docx()))
    assert "Mount" in text and "root:" not in text


def test_a_package_that_unpacks_past_the_limit_is_refused(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    with pytest.raises(DocumentError, match="decompression bomb"):
        ingest_document(zip_bomb_docx(megabytes=3, incompressible=True), "big.docx", "test:formats:limit",
                        embedder, store, replace(LIMITS, max_unpacked_bytes=2_000_000))


def test_span_labels_join_numbered_parts_into_ranges() -> None:
    assert span_label("slide 2", "slide 4") == "slides 2-4"
    assert span_label("lines 3-7", "lines 9-12") == "lines 3-12"
    assert span_label("§ Setup", "§ Usage") == "§ Setup to § Usage"
    assert span_label("", "") == ""
