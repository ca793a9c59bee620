"""Real Word and PowerPoint files made for tests with python-docx and python-pptx, and hostile variants."""

from __future__ import annotations

import io
import os
import zipfile

# Each section (and slide) holds facts about one topic, so a question about that topic has one right place.
SECTIONS = [
    ("Lighthouse maintenance", "The Skerry Point lighthouse lamp is cleaned every Tuesday by the keeper. "
                               "Its lens was made in 1872 by a glassworks in Birmingham."),
    ("Beekeeping notes", "The apiary on the north meadow has twelve hives. Honey is harvested in late August."),
    ("Volcano field guide", "Mount Kessler last erupted in 1931. Its crater lake is acidic and turquoise."),
    ("Railway timetable", "The night train to Hallstatt leaves platform nine at 23:40 and arrives at 07:15."),
]


def docx_with_sections(sections: list[tuple[str, str]] = SECTIONS) -> bytes:
    """A .docx with a Heading 1 and a paragraph per section, and a table after the last one."""
    import docx

    document = docx.Document()
    document.add_paragraph("Field station handbook", style="Title")
    for heading, text in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Station", "Radio channel"
    table.cell(1, 0).text, table.cell(1, 1).text = "North hut", "channel 16"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx_with_slides(sections: list[tuple[str, str]] = SECTIONS) -> bytes:
    """A .pptx with one title-and-content slide per section, with speaker notes."""
    import pptx

    presentation = pptx.Presentation()
    layout = presentation.slide_layouts[1]
    for heading, text in sections:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = heading
        slide.placeholders[1].text_frame.text = text
        slide.notes_slide.notes_text_frame.text = f"Remember to mention {heading.lower()}."
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def _rewrite(data: bytes, change: dict[str, bytes], add: dict[str, bytes] | None = None) -> bytes:
    """The same package with some parts replaced or added."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, change.get(entry.filename, source.read(entry.filename)))
        for name, body in (add or {}).items():
            target.writestr(name, body)
    return out.getvalue()


def zip_bomb_docx(megabytes: int = 20, incompressible: bool = False) -> bytes:
    """A .docx whose media part unpacks to ``megabytes`` MB of zeros (a thousandth of that packed), or
    (``incompressible``) of random bytes: a big file rather than a bomb."""
    out = io.BytesIO(docx_with_sections())
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as package, \
            package.open("word/media/padding.bin", "w", force_zip64=True) as part:
        for _ in range(megabytes):
            part.write(os.urandom(1 << 20) if incompressible else b"\0" * (1 << 20))
    return out.getvalue()


def xxe_docx() -> bytes:
    """A .docx whose main part declares an external entity pointing at a local file."""
    data = docx_with_sections()
    body = zipfile.ZipFile(io.BytesIO(data)).read("word/document.xml")
    declaration = b'<!DOCTYPE w:document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    at = body.index(b"?>") + 2
    hostile = body[:at] + declaration + body[at:].replace(b"Mount Kessler", b"Mount &secret;", 1)
    return _rewrite(data, {"word/document.xml": hostile})


def macro_docx() -> bytes:
    """A .docx carrying a VBA project part and declaring it, as a .docm does."""
    data = docx_with_sections()
    types = zipfile.ZipFile(io.BytesIO(data)).read("[Content_Types].xml")
    types = types.replace(b"</Types>", b'<Default Extension="bin" '
                          b'ContentType="application/vnd.ms-office.vbaProject"/></Types>')
    return _rewrite(data, {"[Content_Types].xml": types},
                    {"word/vbaProject.bin": b"\xd0\xcf\x11\xe0" + b"Attribute VB_Name = \"AutoOpen\"" * 10})
