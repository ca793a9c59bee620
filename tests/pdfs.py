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


def slide_deck_pdf(slides: list[tuple[str, list[str]]], width: float = 960, height: float = 540) -> bytes:
    """A presentation exported to PDF: landscape pages, a large heading and a few bulleted lines each."""
    doc = pymupdf.open()
    for number, (heading, lines) in enumerate(slides, start=1):
        page = doc.new_page(width=width, height=height)
        page.insert_text((40, 70), heading, fontsize=32)
        for row, line in enumerate(lines):
            page.insert_text((60, 140 + 44 * row), "\u00b7  " + line, fontsize=22)
        page.insert_text((width - 50, height - 20), str(number), fontsize=12)
    data = doc.tobytes()
    doc.close()
    return bytes(data)


# A deck whose slides are short and share no full stops: each slide answers one question.
DECK_SLIDES = [
    ("Welcome to the Borealis Cluster", ["Onboarding for new lab members", "Research Computing Team"]),
    ("Storage at a Glance", ["/home: 50 GB, backed up nightly", "/scratch: 100 TB, no backup",
                             "Scratch files untouched for 30 days are purged"]),
    ("Checking Your Quota", ["Run: quota-report", "Warnings arrive by email at 90%",
                             "Over quota: writes fail, jobs crash"]),
    ("Moving Data In and Out", ["Small files: scp or rsync via login node",
                                "Large transfers: use the data transfer node"]),
    ("Getting Help", ["Ticket: help@rc.example.org", "Office hours: Thursdays 14:00-16:00"]),
]


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


def bomb_pdf(megabytes: int, one_string: bool = False) -> bytes:
    """A small PDF whose one page's content stream inflates to ``megabytes`` MB: no-op operators, or
    (``one_string``) a single giant string the reader must hold in memory at once."""
    import zlib

    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"BT (" if one_string else b"")]
    block = (b"A" if one_string else b"q Q ") * (1 << 18)
    for _ in range(megabytes * 4 if one_string else megabytes):
        parts.append(compressor.compress(block))
    parts += [compressor.compress(b") Tj ET" if one_string else b""), compressor.flush()]
    stream = b"".join(parts)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out = b"%PDF-1.7\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def scanned_pdf(pages: list[str], dpi: int = 150) -> bytes:
    """A PDF like a scan of :func:`pdf_with_pages`: each page is only an image of the text, no text layer."""
    source = pymupdf.open(stream=pdf_with_pages(pages), filetype="pdf")
    doc = pymupdf.open()
    for page in source:
        pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        scan = doc.new_page(width=page.rect.width, height=page.rect.height)
        scan.insert_image(scan.rect, stream=pixmap.tobytes("png"))
    data = doc.tobytes(deflate=True)
    doc.close()
    source.close()
    return bytes(data)
