"""Real PDFs made for tests with PyMuPDF: known text on known pages, and broken files."""

from __future__ import annotations

import pymupdf

# Each page of the fact sheet holds facts about one topic, so a question about that topic has one right page.
FACT_PAGES = [
    "Lighthouse maintenance. The Skerry Point lighthouse lamp is cleaned every Tuesday by the keeper. "
    "Its lens was made in 1872 by a glassworks in Birmingham and weighs four tonnes.",
    "Beekeeping notes. The apiary on the north meadow has twelve hives. Honey is harvested in late August, "
    "and the queens are marked with a blue dot of paint.",
    "Volcano field guide. Mount Kessler last erupted in 1931. Its crater lake is acidic and turquoise, "
    "and sulphur vents on the east flank make the air smell of rotten eggs.",
    "Railway timetable. The night train to Hallstatt leaves platform nine at 23:40 and arrives at 07:15. "
    "A sleeper cabin costs ninety euros and breakfast is served in the dining car.",
]


def pdf_with_pages(pages: list[str]) -> bytes:
    """A PDF with one page per string, text laid out in a box so long strings wrap."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=11)
    data = doc.tobytes()
    doc.close()
    return bytes(data)


def encrypted_pdf() -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret minutes of the board")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="user")
    doc.close()
    return bytes(data)


def textless_pdf() -> bytes:
    """A PDF whose pages are drawings only, like a scan: no text layer."""
    doc = pymupdf.open()
    for _ in range(2):
        page = doc.new_page()
        page.draw_rect(pymupdf.Rect(100, 100, 300, 300), color=(0, 0, 0), fill=(0.5, 0.5, 0.5))
    data = doc.tobytes()
    doc.close()
    return bytes(data)
