"""Which kind of document a shared file is, decided from its name and first bytes before anything parses it."""

from __future__ import annotations

from pathlib import PurePosixPath

from core.pdf import MAGIC_SEARCH_BYTES, PDF_MAGIC, DocumentError

# kind -> the file name endings that select it
KINDS: dict[str, tuple[str, ...]] = {
    "pdf": (".pdf",),
    "docx": (".docx",),
    "pptx": (".pptx",),
    "md": (".md", ".markdown"),
    "txt": (".txt", ".text"),
    "html": (".html", ".htm"),
}
ACCEPTED = "PDF (.pdf), Word (.docx), PowerPoint (.pptx), Markdown (.md), plain text (.txt) and web pages (.html)"
ZIP_MAGIC = b"PK\x03\x04"
# Office formats that are refused by name, with the reason a person can act on.
_REFUSED = {
    ".docm": "is a macro-enabled Word file; macros are never run here. Save it as .docx (without macros) or PDF.",
    ".pptm": "is a macro-enabled PowerPoint file; macros are never run here. Save it as .pptx or PDF.",
    ".xlsm": "is a macro-enabled Excel file; macros are never run here.",
    ".doc": "is an old binary Word file (.doc). Save it as .docx or PDF and share it again.",
    ".ppt": "is an old binary PowerPoint file (.ppt). Save it as .pptx or PDF and share it again.",
}


def accepted_name(file_name: str) -> bool:
    """The name ends like a format this bot reads (adapters use it to pick files off a message)."""
    suffix = PurePosixPath(file_name.lower()).suffix
    return any(suffix in endings for endings in KINDS.values())


def detect_kind(data: bytes, file_name: str) -> str:
    """The kind of ``data`` (a key of :data:`KINDS`). Raises :class:`DocumentError` naming the accepted formats."""
    suffix = PurePosixPath(file_name.lower()).suffix
    if suffix in _REFUSED:
        raise DocumentError(f"{file_name} {_REFUSED[suffix]}")
    for kind, endings in KINDS.items():
        if suffix in endings:
            if kind in ("docx", "pptx") and data and not data.startswith(ZIP_MAGIC):
                raise DocumentError(f"{file_name} is not a valid {suffix} file (an Office file is a ZIP package; "
                                    "this one is not). Please save it again and share it.")
            return kind
    if PDF_MAGIC in data[:MAGIC_SEARCH_BYTES]:
        return "pdf"  # a PDF saved without its extension
    raise DocumentError(f"I can't read {file_name}: the formats I index are {ACCEPTED}.")
