"""Read a document in a disposable child process with limits, so a hostile or broken file cannot hurt the worker.

PDFs are read page by page (scanned pages recognised by OCR, :mod:`core.ocr`); Word, PowerPoint, Markdown,
text and HTML files are read into parts (:mod:`core.office`, :mod:`core.textfiles`) in the same child.

The parent (:class:`SandboxedPdf`) starts ``python -m core.pdf_sandbox_child``, writes the file's bytes to its
stdin and reads one JSON object per line from its stdout, page by page, so a 3,500-page document
streams through in flat memory. The child starts with an allow-listed environment (no token, no API
key) and no network (a seccomp filter, and a network namespace where the OS allows: core/child_process.py);
it caps its own address space (RLIMIT_AS) and CPU time; the parent kills it at the wall-time limit.
Whatever happens to the child, the parent raises :class:`~core.pdf.DocumentError` with a message for
the person who shared the file.

Child -> parent lines:
    {"type": "open", "pages": 120, "repaired": false, "ocr": true, "unit": "page", "title": "",
     "dropped": ["Text nested more than 2,048 elements deep could not be read and was not indexed."]}
    {"type": "page", "number": 1, "text": "...", "ocr": false, "label": "", "sections": [[0, "Title > 1 Intro"]]}
                                                                  (one per page, in order)
    {"type": "done"}
    {"type": "error", "message": "..."}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.child_process import NO_ISOLATION, start_isolated
from core.documents import PageText
from core.pdf import DocumentError
from core.text_safety import escape_name

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ParseLimits:
    """What one parse may use. Every field comes from a setting (phobos/settings.py)."""

    max_pages: int = 5000
    timeout_s: float = 600.0  # wall time for the whole file
    # Added to that (wall time, and CPU time per core) for each scanned page recognised: OCR takes seconds a
    # page, so a long scan would otherwise hit a limit sized for reading text layers.
    ocr_page_s: float = 60.0
    max_memory_mb: int = 2048  # address space of the child process (OCR's models need about 1.4 GB)
    max_text_chars: int = 50_000_000  # extracted text, all pages together
    ocr: bool = True  # recognise scanned pages (and pages whose text layer is garbage)
    ocr_engine: str = "rapidocr"  # or "tesseract", where installed
    max_unpacked_bytes: int = 200_000_000  # an Office file's ZIP package, all parts unpacked


@dataclass
class SandboxedPdf:
    """A PDF being read by a child process. Use as a context manager; iterate :meth:`pages` once."""

    data: bytes
    file_name: str
    limits: ParseLimits = field(default_factory=ParseLimits)
    kind: str = "pdf"  # a key of core.formats.KINDS
    source_url: str = ""  # a page fetched from a link: its parts are cited by this URL
    page_count: int = 0
    unit: str = "page"  # what page_count counts: page, slide, section, paragraph
    title: str = ""  # a web page's title, or a PDF's own (metadata) title
    is_repaired: bool = False
    has_ocr: bool = False
    ocr_pages: list[int] = field(default_factory=list)
    unreadable_pages: list[int] = field(default_factory=list)  # no text layer and no OCR result
    dropped: list[str] = field(default_factory=list)  # what the reader could not take in, one sentence each
    network_isolation: str = ""  # how the reader is kept off the network: "seccomp+netns", "seccomp", ... "none"

    def __post_init__(self) -> None:
        self._timed_out = threading.Event()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        # Two malloc arenas, not one per thread: onnxruntime's threads would otherwise reserve address space
        # that counts against the child's limit without ever being used.
        # The child gets no secret and no network (core/child_process.py): it reads untrusted bytes.
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "MALLOC_ARENA_MAX": "2"}
        config = json.dumps({"file_name": self.file_name, "max_pages": self.limits.max_pages,
                             "max_memory_mb": self.limits.max_memory_mb, "timeout_s": self.limits.timeout_s,
                             "ocr_page_s": self.limits.ocr_page_s,
                             "max_text_chars": self.limits.max_text_chars, "ocr": self.limits.ocr,
                             "ocr_engine": self.limits.ocr_engine,
                             "max_unpacked_bytes": self.limits.max_unpacked_bytes, "kind": self.kind,
                             "source_url": self.source_url})
        self._process, self.network_isolation = start_isolated(
            [sys.executable, "-m", "core.pdf_sandbox_child", config], env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT, start_new_session=True)
        if self.network_isolation == NO_ISOLATION:
            _warn_once_without_isolation()
        self.allowed_s = self.limits.timeout_s  # grows by ocr_page_s with each recognised page
        self._started = time.monotonic()
        self._timer = self._start_timer(self.allowed_s)
        self._writer = threading.Thread(target=self._write_input, daemon=True)
        self._writer.start()
        try:
            header = self._next()
        except BaseException:
            self.close()
            raise
        self.page_count = int(header["pages"])
        self.is_repaired = bool(header["repaired"])
        self.has_ocr = bool(header["ocr"])
        self.unit = str(header.get("unit", "page"))
        self.title = escape_name(str(header.get("title", "")))
        self.dropped = [str(note) for note in header.get("dropped", ())]

    def __enter__(self) -> SandboxedPdf:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def pages(self) -> Iterator[PageText]:
        """Each page's cleaned text, in order, as the child reads it."""
        while True:
            message = self._next()
            if message["type"] == "done":
                return
            number = int(message["number"])
            text = str(message["text"])
            if message.get("ocr"):
                self.ocr_pages.append(number)
                self._extend(self.limits.ocr_page_s)
            if not text:
                self.unreadable_pages.append(number)
            sections = tuple((int(offset), str(path)) for offset, path in message.get("sections", ()))
            yield PageText(number, text, str(message.get("label", "")), sections)

    def close(self) -> None:
        self._timer.cancel()
        if self._process.poll() is None:
            self._kill()
        self._process.wait()
        for stream in (self._process.stdout, self._process.stdin):
            if stream is not None:
                stream.close()
        self._stderr.close()

    def _write_input(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(self.data)
            stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child died or was killed; _next() reports why

    def _start_timer(self, delay_s: float) -> threading.Timer:
        timer = threading.Timer(max(0.0, delay_s), self._on_timeout)
        timer.daemon = True
        timer.start()
        return timer

    def _extend(self, extra_s: float) -> None:
        """Push the wall-time deadline back by ``extra_s``. A timer that has already fired stays fired."""
        if extra_s <= 0 or self._timed_out.is_set():
            return
        self._timer.cancel()
        self.allowed_s += extra_s
        self._timer = self._start_timer(self._started + self.allowed_s - time.monotonic())

    def _on_timeout(self) -> None:
        self._timed_out.set()
        self._kill()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    def _next(self) -> dict[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None
        line = stdout.readline()
        if line:
            message: dict[str, Any] = json.loads(line)
            if message["type"] == "error":
                raise DocumentError(str(message["message"]))
            return message
        raise DocumentError(self._death_message())

    def _death_message(self) -> str:
        code = self._process.wait()
        name = self.file_name
        if self._timed_out.is_set():
            ocr = (f" ({self.limits.timeout_s:.0f} s, plus {self.limits.ocr_page_s:.0f} s for each of the "
                   f"{len(self.ocr_pages)} scanned pages recognised)") if self.ocr_pages else ""
            return (f"Reading {name} took longer than the {self.allowed_s:.0f} s allowed{ocr}, so it was "
                    "stopped. The file may be damaged or built to be slow to read.")
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode("utf-8", "replace")
        log.warning("PDF reader for %s exited with %s: %s", name, code, tail)
        if code == -signal.SIGXCPU or "MemoryError" in tail or "alloc" in tail.lower() or code == -signal.SIGKILL:
            return (f"Reading {name} needed more than the {self.limits.max_memory_mb} MB of memory or the "
                    "CPU time allowed, so it was stopped. The file may be damaged or built to expand "
                    "enormously when read (a 'decompression bomb').")
        return (f"{name} could not be read: the PDF reader stopped unexpectedly (exit {code}). "
                "The file is probably corrupt; try exporting or printing it to PDF again.")


_warned_without_isolation = threading.Event()


def _warn_once_without_isolation() -> None:
    if not _warned_without_isolation.is_set():
        _warned_without_isolation.set()
        log.warning("this system refused both a seccomp filter and a network namespace, so the file reader can "
                    "reach the network; it still holds no secret and runs under its memory and time limits")


def read_pages(data: bytes, file_name: str, limits: ParseLimits) -> Iterator[PageText]:
    """Pages of ``data`` read in a sandboxed process; a shorthand when the report is not needed."""
    with SandboxedPdf(data, file_name, limits) as pdf:
        yield from pdf.pages()
