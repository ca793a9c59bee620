"""PDF bytes -> page texts, with a clear message for every way a file can be unusable."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from core.cleaning import RawPage, strip_running_lines
from core.documents import PageText
from core.text_safety import BIDI_CONTROLS

if TYPE_CHECKING:
    import pymupdf

PDF_MAGIC = b"%PDF-"
MAGIC_SEARCH_BYTES = 1024  # the PDF spec allows junk before the header; readers look this far


class DocumentError(ValueError):
    """A file that cannot be indexed. ``str(error)`` is a message for the person who shared it."""


def open_document(data: bytes, file_name: str, max_pages: int = 5000) -> pymupdf.Document:
    """Open ``data`` as a PDF after checking it is one. Raises :class:`DocumentError` when unusable."""
    if not data:
        raise DocumentError(f"{file_name} is empty (0 bytes).")
    if PDF_MAGIC not in data[:MAGIC_SEARCH_BYTES]:
        kind = _guess_kind(data)
        raise DocumentError(f"{file_name} is not a PDF (its contents look like {kind}). "
                            "Please share the document as a PDF.")
    import pymupdf

    try:
        document = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # PyMuPDF raises several types for broken files
        raise DocumentError(f"{file_name} looks like a PDF but cannot be opened; it may be corrupt "
                            f"({type(exc).__name__}).") from exc
    try:
        if document.needs_pass:
            raise DocumentError(f"{file_name} is password-protected (encrypted). Please share a copy "
                                "without a password.")
        if document.page_count == 0:
            raise DocumentError(f"{file_name} has no pages.")
        if document.page_count > max_pages:
            raise DocumentError(f"{file_name} has {document.page_count} pages; the limit is {max_pages}.")
    except Exception:
        document.close()
        raise
    return document


class PageReadError(Exception):
    """One page could not be read; ``out_of_memory`` when the reader hit its memory limit."""

    def __init__(self, number: int, out_of_memory: bool):
        super().__init__(f"page {number}")
        self.number = number
        self.out_of_memory = out_of_memory


def page_lines(document: pymupdf.Document, index: int) -> list[str]:
    """The text lines of page ``index`` (0-based), ligatures split. Raises :class:`PageReadError`."""
    try:
        raw = document.load_page(index).get_text("text")
    except MemoryError as exc:
        raise PageReadError(index + 1, out_of_memory=True) from exc
    except Exception as exc:  # MuPDF reports a failed allocation as RuntimeError("... malloc|realloc ... failed")
        raise PageReadError(index + 1, out_of_memory="alloc" in str(exc)) from exc
    return unicodedata.normalize("NFKC", raw).splitlines()


# A slide deck: landscape pages (4:3 is 1.33, 16:9 is 1.78; A4/Letter landscape reports are 1.29-1.41)
# that hold little text each. Its pages are indexed one per passage, never packed together: packing five
# short slides into one passage blurs its vector so no single slide's question finds it.
SLIDE_MIN_ASPECT = 1.2
SLIDE_MAX_WORDS = 120  # median words on a page; a landscape report page carries several hundred
SLIDE_SAMPLE_PAGES = 30


def looks_like_slides(document: pymupdf.Document) -> bool:
    """True for a presentation exported to PDF: most sampled pages landscape and short."""
    count = min(document.page_count, SLIDE_SAMPLE_PAGES)
    if count < 2:
        return False
    pages = []
    for index in range(count):
        try:
            pages.append(document.load_page(index))
        except Exception:  # an unreadable page says nothing about the layout
            continue
    landscape = [p for p in pages if p.rect.height > 0 and p.rect.width / p.rect.height >= SLIDE_MIN_ASPECT]
    if len(landscape) < 0.8 * count:
        return False  # most documents stop here, before any text is read twice
    words = []
    for page in pages:
        try:
            words.append(len(page.get_text("text").split()))
        except Exception:
            continue
    return bool(words) and sorted(words)[len(words) // 2] <= SLIDE_MAX_WORDS


def read_page_lines(document: pymupdf.Document, index: int) -> list[str]:
    """:func:`page_lines`, or [] for a page that cannot be read: one broken page must not lose the rest."""
    try:
        return page_lines(document, index)
    except PageReadError:
        return []


def extract_pages(data: bytes, file_name: str, max_pages: int = 5000) -> list[PageText]:
    """Read every page's text in this process, running headers and footers removed.

    Raises :class:`DocumentError` for files that give no usable text. The worker reads PDFs through
    :mod:`core.pdf_sandbox` instead, which runs this same code in a disposable, limited process.
    """
    with open_document(data, file_name, max_pages) as document:
        raw = (RawPage(i + 1, read_page_lines(document, i)) for i in range(document.page_count))
        pages = [PageText(page.number, clean_text("\n".join(page.lines))) for page in strip_running_lines(raw)]
    if not any(page.text for page in pages):
        raise DocumentError(no_text_message(file_name))
    return pages


def no_text_message(file_name: str, ocr_available: bool = False) -> str:
    tail = ("" if ocr_available else " Text recognition (OCR) is not installed on this worker.")
    return (f"{file_name} has no text layer (it may be scanned images), so there is nothing to search."
            f"{tail} Please share a PDF with selectable text.")


# A word broken at a line end: "retrie-\nval". Only before a lower-case letter, so "GC-\nBased" stays.
_HYPHEN_BREAK = re.compile(r"(\w)[-\u00ad][ \t]*\n[ \t]*([a-z])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\u00ad\ufffe\uffff" + BIDI_CONTROLS + "]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_LINE_BREAK = re.compile(r"\s*\n\s*")


def clean_text(text: str) -> str:
    """Undo PDF layout noise: ligatures, hyphenation at line ends, hard line breaks, runs of spaces."""
    text = unicodedata.normalize("NFKC", text)  # also splits ligatures such as 'ﬁ' into 'fi'
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _CONTROL.sub("", text)
    text = _LINE_BREAK.sub("\n", text)
    text = text.replace("\n", " ")
    return _SPACES.sub(" ", text).strip()


def _guess_kind(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "a web page (HTML)"
    if head.startswith(b"pk\x03\x04"):
        return "a ZIP archive or an Office document"
    if head.startswith((b"\x89png", b"\xff\xd8\xff", b"gif8")):
        return "an image"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "plain text"
