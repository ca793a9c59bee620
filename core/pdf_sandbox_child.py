"""What runs inside the sandboxed reader's child process: read the document, write one JSON line per page.

Started by :class:`core.pdf_sandbox.SandboxedPdf` as ``python -m core.pdf_sandbox_child CONFIG``; the file's
bytes arrive on stdin and the lines (the protocol in :mod:`core.pdf_sandbox`'s docstring) leave on stdout.
The child first caps its own address space and CPU time; the readers (pymupdf, OCR, Office) are imported
inside the functions, after that, so their memory counts against the limit too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from core.documents import PageText
from core.pdf import DocumentError, PageReadError, no_text_message

log = logging.getLogger(__name__)


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _set_limits(max_memory_mb: int, timeout_s: float, ocr_cpu_s: float) -> None:
    """Address space and CPU time. The soft CPU limit covers reading text layers; :func:`_allow_ocr_page`
    raises it for each page recognised, up to a hard limit that covers every page being scanned."""
    import resource

    memory = max_memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1 + int(ocr_cpu_s)))


def _allow_ocr_page(cpu_s: float) -> None:
    """Raise the soft CPU limit by ``cpu_s`` (never past the hard one) after a page was recognised."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (min(hard, soft + int(cpu_s)), hard))


def _ocr_cpu_s_per_page(config: dict[str, Any]) -> float:
    """CPU seconds one recognised page may use: its wall allowance on every core (OCR runs threads)."""
    return float(config.get("ocr_page_s", 0.0)) * (os.cpu_count() or 1)


def _ocr_available(engine: str = "rapidocr") -> bool:
    """The OCR ``engine`` can run on this machine (see :mod:`core.ocr`)."""
    from core.ocr import available

    return available(engine)


def _child(config: dict[str, Any]) -> None:
    # pymupdf-layout (pulled in by pymupdf4llm) loads an ONNX model whenever pymupdf is imported; text
    # extraction does not use it, so the child blocks it: faster start, and memory left for the file.
    sys.modules["pymupdf.layout"] = None  # type: ignore[assignment]
    _set_limits(int(config["max_memory_mb"]), float(config["timeout_s"]),
                _ocr_cpu_s_per_page(config) * int(config["max_pages"]) if config["ocr"] else 0.0)
    data = sys.stdin.buffer.read()
    kind = str(config.get("kind", "pdf"))
    if kind == "pdf":
        _read_pdf(config, data)
    else:
        _read_other(config, kind, data)


def _read_other(config: dict[str, Any], kind: str, data: bytes) -> None:
    """Formats without pages: all parts are read first (their text is bounded by the limits), then sent."""
    from core import office, textfiles

    file_name = str(config["file_name"])
    title = ""
    unit = "section"
    dropped: list[str] = []
    parts: list[PageText]
    if kind in ("docx", "pptx"):
        office.check_package(data, file_name, int(config["max_unpacked_bytes"]))
        if kind == "docx":
            parts = list(office.docx_parts(data))
        else:
            parts, unit = list(office.pptx_parts(data)), "slide"
    else:
        text = textfiles.decode_text(data, file_name)
        if kind == "txt":
            parts, unit = list(textfiles.text_parts(text)), "paragraph"
        elif kind == "md":
            parts = list(textfiles.markdown_parts(text))
        else:  # html: an upload cites its headings; a page fetched from a link cites its URL
            markdown, title, dropped = textfiles.html_to_markdown(text)
            parts = list(textfiles.markdown_parts(markdown, str(config.get("source_url", ""))))
    del data
    max_chars = int(config["max_text_chars"])
    if sum(len(part.text) for part in parts) > max_chars:
        _emit({"type": "error", "message": _too_much_text(file_name, max_chars)})
        return
    if not any(part.text for part in parts):
        _emit({"type": "error", "message": f"{file_name} has no text to index."})
        return
    _emit({"type": "open", "pages": len(parts), "repaired": False, "ocr": False, "unit": unit, "title": title,
           "dropped": dropped})
    for part in parts:
        _emit({"type": "page", "number": part.number, "text": part.text, "ocr": False, "label": part.label})
    _emit({"type": "done"})


def _too_much_text(file_name: str, max_chars: int) -> str:
    return (f"{file_name} holds more text than the {max_chars:,} characters allowed for one file; please share "
            "a smaller document.")


def _read_pdf(config: dict[str, Any], data: bytes) -> None:
    from core.cleaning import RawPage, strip_running_lines
    from core.headings import SectionTracker, body_font_size, document_title, font_headings, outline_by_page
    from core.ocr import PageRecognizer, is_garbage, looks_scanned
    from core.pdf import clean_text, looks_like_slides, open_document, page_lines

    file_name = str(config["file_name"])
    document = open_document(data, file_name, int(config["max_pages"]))
    del data
    engine = str(config.get("ocr_engine", "rapidocr"))
    use_ocr = bool(config["ocr"]) and _ocr_available(engine)
    recognizer = PageRecognizer(engine) if use_ocr else None
    unit = "slide" if looks_like_slides(document) else "page"
    _emit({"type": "open", "pages": document.page_count, "repaired": bool(document.is_repaired),
           "ocr": use_ocr, "unit": unit, "title": str((document.metadata or {}).get("title") or "").strip()})
    # Headings from the outline when the file has one, else from font sizes (core/headings.py).
    outline = outline_by_page(document)
    body_size = 0.0 if outline else body_font_size(document)
    tracker = SectionTracker(document_title(document.metadata, file_name))
    ocr_pages: set[int] = set()
    failed: list[PageReadError] = []

    def recognised(index: int, lines: list[str]) -> list[str]:
        """OCR for a page with no text layer that looks scanned, or with a garbage text layer."""
        if recognizer is None or (failed[-1:] and failed[-1].number == index + 1):
            return lines
        empty = not any(line.strip() for line in lines)
        if not (empty or is_garbage(lines)):
            return lines
        page = document.load_page(index)
        if empty and not looks_scanned(page):
            return lines
        try:
            found = recognizer.lines(page)
        except MemoryError:
            raise
        except Exception as exc:  # one page the engine cannot handle must not lose the others
            log.warning("OCR of page %d failed: %s", index + 1, exc)
            return lines
        _allow_ocr_page(_ocr_cpu_s_per_page(config))
        if any(line.strip() for line in found):
            ocr_pages.add(index + 1)
            return found
        return lines

    def raw_pages() -> Iterator[RawPage]:
        for index in range(document.page_count):
            try:
                lines = page_lines(document, index)
            except PageReadError as exc:
                failed.append(exc)
                lines = []
            yield RawPage(index + 1, recognised(index, lines))

    max_chars = int(config["max_text_chars"])
    total_chars = 0
    any_text = False
    for page in strip_running_lines(raw_pages()):
        text = clean_text("\n".join(page.lines))
        total_chars += len(text)
        if total_chars > max_chars:
            _emit({"type": "error", "message": _too_much_text(file_name, max_chars)})
            return
        any_text = any_text or bool(text)
        headings = outline.get(page.number, []) if outline else font_headings(document, page.number - 1, body_size)
        _emit({"type": "page", "number": page.number, "text": text, "ocr": page.number in ocr_pages,
               "label": f"slide {page.number}" if unit == "slide" else "",
               "sections": tracker.page(text, headings)})
    if not any_text:
        _emit({"type": "error", "message": _nothing_read_message(file_name, use_ocr, failed, config)})
        return
    _emit({"type": "done"})


def _nothing_read_message(file_name: str, use_ocr: bool, failed: list[PageReadError], config: dict[str, Any]) -> str:
    if any(exc.out_of_memory for exc in failed):
        return (f"Reading {file_name} needed more than the {config['max_memory_mb']} MB of memory allowed, so "
                "it was stopped. The file may be damaged or built to expand enormously when read "
                "(a 'decompression bomb').")
    if failed:
        return (f"{file_name} could not be read: its pages are damaged (it may be corrupt). "
                "Try exporting or printing it to PDF again.")
    return no_text_message(file_name, use_ocr)


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        _child(config)
    except DocumentError as exc:
        _emit({"type": "error", "message": str(exc)})
    except MemoryError:
        # Raised by Python when RLIMIT_AS is reached; the parent turns the exit into a message.
        sys.stderr.write("MemoryError\n")
        sys.exit(3)


if __name__ == "__main__":
    main()
