"""Word (.docx) and PowerPoint (.pptx) files -> parts to index, after checking the package is safe to open.

An Office file is a ZIP package of XML parts. Before python-docx or python-pptx sees it,
:func:`check_package` refuses: a decompression bomb (too much unpacked data, or a part that expands
far more than text does), any DTD in an XML part (the way to an external-entity reference: OOXML never
needs one), and macro or ActiveX parts. Nothing in a package is ever run; the refusal says why the file
was turned down. This runs in the sandboxed child (core/pdf_sandbox.py), under its memory and time limits.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from core.documents import PageText
from core.pdf import DocumentError, clean_text

MAX_PARTS = 5000  # entries in one package
MAX_RATIO = 200  # unpacked / packed size of one part; XML text compresses about 10x, a bomb 1000x
RATIO_FLOOR_BYTES = 1 << 20  # smaller parts may have any ratio
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_CODE_PART = re.compile(r"(^|/)(vbaProject\.bin|vbaData\.xml|activeX[^/]*)$|(^|/)activeX/", re.IGNORECASE)
_MACRO_TYPE = re.compile(rb"macroEnabled|vbaProject|ms-office\.activeX", re.IGNORECASE)


def check_package(data: bytes, file_name: str, max_unpacked_bytes: int) -> None:
    """Raise :class:`DocumentError` when the package is not a ZIP, is a bomb, declares a DTD or holds macros."""
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DocumentError(f"{file_name} is not a valid Office file (its ZIP package is damaged). "
                            "Please save it again and share it.") from exc
    with package:
        entries = package.infolist()
        if len(entries) > MAX_PARTS:
            raise DocumentError(f"{file_name} holds {len(entries)} parts; refused as a likely decompression bomb.")
        unpacked = sum(entry.file_size for entry in entries)
        ratios = [entry.file_size / max(1, entry.compress_size) for entry in entries
                  if entry.file_size > RATIO_FLOOR_BYTES]
        if unpacked > max_unpacked_bytes or any(ratio > MAX_RATIO for ratio in ratios):
            raise DocumentError(
                f"{file_name} unpacks to {unpacked / 1e6:.0f} MB (limit {max_unpacked_bytes / 1e6:.0f} MB) or "
                f"expands far more than a document does: refused as a decompression bomb ('zip bomb').")
        code = [entry.filename for entry in entries if _CODE_PART.search(entry.filename)]
        if code or _MACRO_TYPE.search(_read(package, "[Content_Types].xml")):
            raise DocumentError(f"{file_name} contains macros or ActiveX controls; they are never run here, and "
                                "the file was refused. Save a copy without macros (.docx/.pptx) or as PDF.")
        for entry in entries:
            if entry.filename.endswith((".xml", ".rels")) and _DTD.search(_read(package, entry.filename)):
                raise DocumentError(
                    f"{file_name} has an XML part ({entry.filename}) with a document type declaration, the way "
                    "to an external-entity reference; Office files never need one, so it was refused unread.")


def _read(package: zipfile.ZipFile, name: str) -> bytes:
    try:
        return package.read(name)
    except KeyError:
        return b""


def docx_parts(data: bytes) -> Iterator[PageText]:
    """One part per section: the text under each heading, labelled "§ Heading"; tables read row by row."""
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    label = "start of the document"
    lines: list[str] = []
    number = 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.extend(" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows)
            continue
        text = block.text.strip()
        style = (block.style.name if block.style is not None else "") or ""
        if text and (style.startswith("Heading") or style == "Title"):
            if any(line.strip() for line in lines):
                number += 1
                yield PageText(number, clean_text("\n".join(lines)), label)
            label, lines = f"§ {text}", [_as_sentence(text)]
        elif text:
            lines.append(text)
    if any(line.strip() for line in lines):
        yield PageText(number + 1, clean_text("\n".join(lines)), label)


def pptx_parts(data: bytes) -> Iterator[PageText]:
    """One part per slide, labelled "slide N": every text frame and table on it, then its speaker notes."""
    import pptx

    presentation = pptx.Presentation(io.BytesIO(data))
    for number, slide in enumerate(presentation.slides, start=1):
        lines = [line for shape in slide.shapes for line in _shape_lines(shape)]
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            lines.append(slide.notes_slide.notes_text_frame.text)
        yield PageText(number, clean_text("\n".join(_as_sentence(line) for line in lines if line.strip())),
                       f"slide {number}")


def _shape_lines(shape: Any) -> Iterator[str]:
    if getattr(shape, "shapes", None) is not None:  # a group
        for inner in shape.shapes:
            yield from _shape_lines(inner)
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        yield from (paragraph.text for paragraph in shape.text_frame.paragraphs)
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            yield " | ".join(cell.text.strip() for cell in row.cells)


def _as_sentence(line: str) -> str:
    """A title or bullet without end punctuation gets a full stop, so it stays its own sentence."""
    line = line.strip()
    return line if not line or line[-1] in ".!?:;" else line + "."
