"""Section context: heading paths from a PDF's outline or font sizes, carried onto chunks."""

from __future__ import annotations

import pymupdf

from core.chunking import chunk_pages
from core.documents import PageText
from core.headings import HeadingLine, SectionTracker, document_title, fit_path, section_at
from core.pdf_sandbox import ParseLimits, SandboxedPdf

BODY = ("The keeper cleans the lamp every Tuesday morning before the first ferry arrives at the pier. "
        "Spare bulbs are kept in the cellar next to the tide tables. ")


def _manual(with_outline: bool) -> bytes:
    """Two pages: chapter 'Lighthouse' with sections 'Lamp care' (page 1) and 'Fog signals' (page 2),
    headings set in larger type; with an outline (bookmarks) or without one."""
    doc = pymupdf.open()
    doc.set_metadata({"title": "Keeper's Handbook"})
    page = doc.new_page()
    page.insert_text((50, 60), "1 Lighthouse", fontsize=20)
    page.insert_text((50, 100), "1.1 Lamp care", fontsize=15)
    page.insert_textbox(pymupdf.Rect(50, 115, 550, 300), BODY, fontsize=10)
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(50, 50, 550, 150), BODY, fontsize=10)
    page.insert_text((50, 200), "1.2 Fog signals", fontsize=15)
    page.insert_textbox(pymupdf.Rect(50, 215, 550, 400), "The horn sounds twice a minute in fog. " * 3,
                        fontsize=10)
    if with_outline:
        doc.set_toc([[1, "1 Lighthouse", 1], [2, "1.1 Lamp care", 1], [2, "1.2 Fog signals", 2]])
    data = doc.tobytes()
    doc.close()
    return bytes(data)


def _read(data: bytes) -> tuple[str, list[PageText]]:
    with SandboxedPdf(data, "handbook.pdf", ParseLimits(ocr=False)) as pdf:
        pages = list(pdf.pages())
        return pdf.title, pages


def _paths_at_fog(pages: list[PageText]) -> tuple[str, str, str]:
    second = pages[1]
    fog = second.text.index("1.2 Fog signals")
    return (section_at(pages[0].sections, len(pages[0].text) - 1), section_at(second.sections, 0),
            section_at(second.sections, fog + 20))


def test_heading_path_from_the_outline() -> None:
    title, pages = _read(_manual(with_outline=True))
    assert title == "Keeper's Handbook"
    end_of_first, start_of_second, after_fog = _paths_at_fog(pages)
    assert end_of_first == "Keeper's Handbook > 1 Lighthouse > 1.1 Lamp care"
    assert start_of_second == end_of_first  # the section carries over the page break
    assert after_fog == "Keeper's Handbook > 1 Lighthouse > 1.2 Fog signals"  # a sibling replaces it


def test_heading_path_from_font_sizes_when_there_is_no_outline() -> None:
    _, pages = _read(_manual(with_outline=False))
    end_of_first, start_of_second, after_fog = _paths_at_fog(pages)
    assert end_of_first == "Keeper's Handbook > 1 Lighthouse > 1.1 Lamp care"
    assert start_of_second == end_of_first
    assert after_fog == "Keeper's Handbook > 1 Lighthouse > 1.2 Fog signals"


def test_chunks_carry_their_section_and_keep_their_text_clean() -> None:
    _, pages = _read(_manual(with_outline=True))
    chunks = chunk_pages(pages, "d", "handbook.pdf", lambda texts: [len(t.split()) for t in texts],
                         max_tokens=30, overlap_tokens=0)
    horn = chunks[-1]  # only the fog section's sentences
    assert horn.text.startswith("The horn sounds")
    assert horn.section.endswith("1.2 Fog signals")
    assert "Keeper's Handbook" not in horn.text
    assert horn.indexed_text() == f"{horn.section}\n{horn.text}"


def test_a_heading_missing_from_the_cleaned_text_is_ignored() -> None:
    tracker = SectionTracker("Guide")
    # A running header removed by cleaning would otherwise reset the path on every page.
    sections = tracker.page("Body text only.", [HeadingLine("Chapter 3", 20.0)])
    assert sections == ((0, "Guide"),)


def test_a_larger_heading_closes_the_smaller_ones() -> None:
    tracker = SectionTracker("Guide")
    tracker.page("A intro B detail", [HeadingLine("A", 20.0), HeadingLine("B", 14.0)])
    assert tracker.path() == "Guide > A > B"
    tracker.page("C next", [HeadingLine("C", 20.0)])
    assert tracker.path() == "Guide > C"


def test_title_falls_back_to_the_file_name_and_long_paths_drop_middle_levels() -> None:
    assert document_title({"title": "Microsoft Word - Budget 2024"}, "x.pdf") == "Budget 2024"
    assert document_title({}, "annual_report-2024.pdf") == "annual report 2024"
    path = fit_path(["Title", *[f"Level {i} " + "x" * 40 for i in range(5)]])
    assert path.startswith("Title > ") and path.endswith("Level 4 " + "x" * 40)
