"""The settings of reading, chunking and embedding a file: one section (``settings.ingest``), turned into the
:class:`core.ingest.IngestLimits` every ingest uses in one place (:meth:`IngestSettings.limits`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from core.env_settings import EnvSection, env
from core.sizes import bytes_from_mb

if TYPE_CHECKING:
    from core.ingest import IngestLimits


class IngestSettings(EnvSection):
    # --- what a file may be ---
    # Largest file indexed, in megabytes of 1,000,000 bytes (core/sizes.py).
    max_upload_mb: float = Field(50.0, validation_alias=env("PHOBOS_MAX_UPLOAD_MB"))
    # Most pages indexed from one file.
    max_pages: int = Field(5000, validation_alias=env("PHOBOS_MAX_PAGES"))
    # Wall time allowed to read one PDF in its disposable child process.
    parse_timeout_s: float = Field(600.0, validation_alias=env("PHOBOS_PARSE_TIMEOUT_S"))
    # Added to that for each scanned page recognised by OCR (wall time, and CPU time per core): OCR
    # takes seconds a page, so a long scan would otherwise hit the limit sized for text layers.
    parse_ocr_page_s: float = Field(60.0, validation_alias=env("PHOBOS_PARSE_OCR_PAGE_S"))
    # Address space (RLIMIT_AS) of the child process that reads one file; OCR's models need about 1.4 GB of it.
    parse_memory_mb: int = Field(2048, validation_alias=env("PHOBOS_PARSE_MEMORY_MB"))
    # Extracted text allowed from one file, all pages together.
    max_text_chars: int = Field(50_000_000, validation_alias=env("PHOBOS_MAX_TEXT_CHARS"))
    # Recognise scanned PDF pages (no text layer, or a garbage one) by OCR; false: report them unreadable.
    ocr: bool = Field(True, validation_alias=env("PHOBOS_OCR"))
    # OCR engine: rapidocr (models inside its wheel) or tesseract (where its binary and data are installed).
    ocr_engine: str = Field("rapidocr", validation_alias=env("PHOBOS_OCR_ENGINE"))
    # Unpacked size allowed for an Office file's ZIP package, all parts together (zip-bomb guard).
    max_unpacked_mb: int = Field(200, validation_alias=env("PHOBOS_MAX_UNPACKED_MB"))

    # --- how it is indexed ---
    # Pages read, chunked and embedded per step of an ingest; bounds memory and the wait between steps.
    ingest_slice_pages: int = Field(32, validation_alias=env("PHOBOS_INGEST_SLICE_PAGES"))
    # Largest chunk in embedder tokens (the embedder's own limit caps it).
    chunk_tokens: int = Field(250, validation_alias=env("PHOBOS_CHUNK_TOKENS"))
    # Tokens repeated between neighbouring chunks, so a sentence cut at a boundary is found whole.
    chunk_overlap_tokens: int = Field(30, validation_alias=env("PHOBOS_CHUNK_OVERLAP_TOKENS"))
    # Embed and index each chunk with the document title and heading path above it (see
    # bench/retrieval_quality.py, pipeline +S); the stored text stays clean either way.
    section_context: bool = Field(False, validation_alias=env("PHOBOS_SECTION_CONTEXT"))

    @property
    def max_upload_bytes(self) -> int:
        return bytes_from_mb(self.max_upload_mb)

    def limits(self) -> IngestLimits:
        """What one ingest may cost and how it chunks (megabytes of 1,000,000 bytes, core/sizes.py)."""
        from core.ingest import IngestLimits  # not at import: reading settings loads no numpy

        return IngestLimits(max_bytes=self.max_upload_bytes, max_pages=self.max_pages,
                            chunk_tokens=self.chunk_tokens, overlap_tokens=self.chunk_overlap_tokens,
                            parse_timeout_s=self.parse_timeout_s, parse_ocr_page_s=self.parse_ocr_page_s,
                            parse_memory_mb=self.parse_memory_mb, max_text_chars=self.max_text_chars,
                            ocr=self.ocr, ocr_engine=self.ocr_engine,
                            max_unpacked_bytes=bytes_from_mb(self.max_unpacked_mb),
                            slice_pages=self.ingest_slice_pages, section_context=self.section_context)
