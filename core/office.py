"""Word (.docx) and PowerPoint (.pptx) files -> parts to index, after checking the package is safe to open.

An Office file is a ZIP package of XML parts. Before python-docx or python-pptx sees it,
:func:`check_package` refuses: a decompression bomb (too much unpacked data, or a part that expands
far more than text does), macro or ActiveX parts, and any XML part that declares a DTD (the way to an
external-entity reference: OOXML never needs one) or is not well-formed. "XML part" is decided by what the
part is, not by its name: a part named ``.xml``/``.rels``, one whose content type in
``[Content_Types].xml`` is XML, and any part whose first bytes read as ``<`` in UTF-8, UTF-16 or UTF-32.
Each is parsed, streamed, by defusedxml's expat parser with DTDs, entities and external references
forbidden, so the check holds whatever the part's name or encoding (a UTF-16 part is read as UTF-16; an
encoding expat cannot read, such as UTF-32, is refused as malformed). Nothing in a package is ever run;
the refusal says why the file was turned down. This runs in the sandboxed child (core/pdf_sandbox_child.py),
under its memory and time limits.
"""

from __future__ import annotations

import codecs
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
XML_READ_BYTES = 1 << 20  # one part is parsed this many bytes at a time, never read whole
_SNIFF_ENCODINGS = ("utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")
SNIFF_BYTES = 64  # a part whose first bytes read as "<" (after blanks) in one of those encodings is XML
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
        xml_types = _xml_content_types(package, file_name)
        for entry in entries:
            if entry.is_dir():
                continue
            if _is_declared_xml(entry.filename, xml_types):
                _check_xml_part(package, entry.filename, file_name)
            elif _looks_like_xml(package, entry):
                # Nothing parses such a part as XML, and a binary part may start with "<" by chance: only
                # a DTD or an entity in it refuses the file, not a failure to parse.
                _check_xml_part(package, entry.filename, file_name, is_declared=False)


def _xml_content_types(package: zipfile.ZipFile, file_name: str) -> tuple[set[str], set[str]]:
    """(extensions, part names) that ``[Content_Types].xml`` declares XML, read after that part is checked."""
    import defusedxml.ElementTree

    name = "[Content_Types].xml"
    if name not in package.namelist():
        return set(), set()
    _check_xml_part(package, name, file_name)
    extensions: set[str] = set()
    part_names: set[str] = set()
    for element in defusedxml.ElementTree.fromstring(package.read(name)).iter():
        content_type = element.get("ContentType", "").lower()
        if not content_type.endswith("xml"):
            continue
        if element.tag.endswith("Default"):
            extensions.add(element.get("Extension", "").lower())
        elif element.tag.endswith("Override"):
            part_names.add(element.get("PartName", "").lstrip("/"))
    return extensions, part_names


def _is_declared_xml(name: str, xml_types: tuple[set[str], set[str]]) -> bool:
    """XML by its name or by its content type: python-docx and python-pptx parse these parts."""
    extensions, part_names = xml_types
    return (name.lower().endswith((".xml", ".rels")) or name in part_names
            or name.rpartition(".")[2].lower() in extensions)


def _looks_like_xml(package: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bool:
    """The part's first bytes read as "<" (after blanks) in UTF-8, UTF-16 or UTF-32, whatever its name."""
    with package.open(entry) as part:
        head = part.read(SNIFF_BYTES)
    for encoding in _SNIFF_ENCODINGS:
        try:  # not final: a character cut at the end of the head is not an error
            text = codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
        except UnicodeError:  # not this encoding (also: "utf-16"/"utf-32" without their byte-order mark)
            continue
        if text.lstrip().startswith("<"):
            return True
    return False


def _check_xml_part(package: zipfile.ZipFile, name: str, file_name: str, is_declared: bool = True) -> None:
    """Parse the part ``name`` streamed, with DTDs, entities and external references refused; one that is
    not well-formed refuses the file too when it is ``is_declared`` XML."""
    from xml.sax import SAXException
    from xml.sax.handler import ContentHandler

    from defusedxml import DefusedXmlException
    from defusedxml.expatreader import DefusedExpatParser

    parser = DefusedExpatParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser.setContentHandler(ContentHandler())
    try:
        with package.open(name) as part:
            while chunk := part.read(XML_READ_BYTES):
                parser.feed(chunk)
        parser.close()
    except DefusedXmlException as exc:
        raise DocumentError(
            f"{file_name} has an XML part ({name}) with a document type declaration or an entity, the way to "
            "an external-entity reference; Office files never need one, so it was refused unread.") from exc
    except SAXException as exc:
        if not is_declared:
            return
        raise DocumentError(f"{file_name} has an XML part ({name}) that is not well-formed XML, or is in an "
                            "encoding Office files do not use; the file was refused. Please save it again "
                            "and share it.") from exc


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
