"""Scanned PDFs, Office files and links through a real worker process, driven by the console adapter."""

from __future__ import annotations

import pytest

from jobs.protocol import ReplyType
from tests.office_files import docx_with_sections, pptx_with_slides
from tests.pdfs import FACT_PAGES, scanned_pdf
from tests.test_end_to_end import Conversation, write
from tests.test_fetch import SERVER_IP, LinkServer


@pytest.fixture
def site():  # type: ignore[no-untyped-def]
    server = LinkServer()
    yield server
    server.close()


def test_a_scanned_pdf_is_answered_from_its_ocr_text_citing_the_right_page(redis_server, start_worker,
                                                                         tmp_path) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_TOP_K="1", PHOBOS_CHUNK_TOKENS="60")
    talk = Conversation(redis_server.url, "scanned")
    uploaded = talk("/upload " + write(tmp_path / "scan.pdf", scanned_pdf(FACT_PAGES)))
    assert uploaded is not None and uploaded.type is ReplyType.FINAL, uploaded
    assert "Indexed scan.pdf: 4 pages" in uploaded.text
    assert "4 scanned pages were read by text recognition (OCR): pages 1, 2, 3, 4." in uploaded.text
    assert "recognising scanned pages (OCR)" in talk.out.getvalue()  # progress while recognising

    answer = talk("Where does the night train to Hallstatt leave from?")
    assert answer is not None and answer.type is ReplyType.FINAL, answer
    assert "platform nine" in answer.text
    assert [c.pages for c in answer.citations] == [(4,)]


def test_office_uploads_cite_section_and_slide_and_other_files_are_named(redis_server, start_worker,
                                                                        tmp_path) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_TOP_K="1")
    talk = Conversation(redis_server.url, "office")
    for name, data in [("handbook.docx", docx_with_sections()), ("talk.pptx", pptx_with_slides())]:
        reply = talk("/upload " + write(tmp_path / name, data))
        assert reply is not None and reply.type is ReplyType.FINAL and f"Indexed {name}" in reply.text, reply

    answer = talk("How many hives does the apiary on the north meadow have?")
    assert answer is not None and answer.type is ReplyType.FINAL, answer
    (citation,) = answer.citations
    assert citation.label() in ("handbook.docx, § Beekeeping notes", "talk.pptx, slide 2")
    assert f"[1] {citation.label()}" in talk.out.getvalue()

    refused = talk("/upload " + write(tmp_path / "budget.xlsx", b"PK\x03\x04 spreadsheet"))
    assert refused is not None and refused.type is ReplyType.ERROR
    assert "budget.xlsx" in refused.text and "Word (.docx), PowerPoint (.pptx)" in refused.text


def test_links_in_a_question_are_indexed_and_cited_by_title_and_url(redis_server, start_worker, site) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_TOP_K="1",
                 PHOBOS_FETCH_ALLOW_NETS=f"{SERVER_IP}/32", PHOBOS_FETCH_TIMEOUT_S="20")
    talk = Conversation(redis_server.url, "links")
    article = site.url("/article")
    answer = talk(f"What colour is the crater lake? {article}")
    assert answer is not None and answer.type is ReplyType.FINAL, answer
    assert "Indexed Crater lakes: 1 section, 1 passage." in answer.text  # trafilatura takes the page's own heading
    assert "turquoise" in answer.text
    (citation,) = answer.citations
    assert citation.label() == f"Crater lakes, {article}"

    again = talk(f"Did Mount Kessler erupt? {article}")  # known link: not fetched again
    assert again is not None and again.type is ReplyType.FINAL and "already indexed" in again.text
    assert site.hosts.count(f"{SERVER_IP}:{site.port}") == 1

    pdf_link = site.url("/facts.pdf")
    indexed = talk(pdf_link)  # only a link: the reply says what was indexed
    assert indexed is not None and indexed.type is ReplyType.FINAL
    assert indexed.text.startswith(f"Indexed facts.pdf ({pdf_link}): 4 pages, ")

    refused = talk(f"Summarise {site.url('/to-loopback')} and file:///etc/passwd please")
    assert refused is not None and refused.type is ReplyType.FINAL, refused
    assert "redirects to http://127.0.0.1" in refused.text and "private network" in refused.text
    assert "file:///etc/passwd is not an http or https link" in refused.text
