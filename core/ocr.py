"""Text recognition (OCR) of a rendered PDF page, by RapidOCR (default) or Tesseract where installed.

RapidOCR (``rapidocr-onnxruntime``) ships its detection and recognition models inside its wheel and runs
them with onnxruntime on the CPU: no download, nothing to install beside the Python package. Tesseract is
used through PyMuPDF when its binary and language data are installed. Both run in the sandboxed child
(core/pdf_sandbox_child.py), under the same memory and time limits as the rest of the parse.
"""

from __future__ import annotations

import shutil
import unicodedata
from typing import Any

ENGINES = ("rapidocr", "tesseract")
OCR_DPI = 200  # enough for body text; the bench (bench/ocr_quality.py) compares 150 and 300
MIN_IMAGE_AREA = 0.2  # share of a textless page an image must cover before OCR is tried
MIN_GOOD_SHARE = 0.6  # share of a text layer's visible characters that must be ordinary for it to count


def available(engine: str) -> bool:
    """The engine can run here: the package imports (RapidOCR) or the binary and its data exist (Tesseract)."""
    if engine == "rapidocr":  # found, not imported: its import alone needs more memory than a text PDF
        import importlib.util

        return importlib.util.find_spec("rapidocr_onnxruntime") is not None
    if engine == "tesseract":
        if shutil.which("tesseract") is None:
            return False
        try:
            import pymupdf

            return bool(pymupdf.get_tessdata())
        except Exception:
            return False
    return False


def is_garbage(lines: list[str]) -> bool:
    """A text layer that is mostly not text: a font without a Unicode map gives U+FFFD, private-use or
    control characters instead of letters. Such a page is better recognised from its image."""
    visible = [c for line in lines for c in line if not c.isspace()]
    if len(visible) < 20:
        return False
    ordinary = sum(1 for c in visible if unicodedata.category(c)[0] in "LNPS" and c != "\ufffd")
    return ordinary / len(visible) < MIN_GOOD_SHARE


def looks_scanned(page: Any) -> bool:
    """The page is mostly covered by images, as a scan is."""
    area = abs(page.rect)
    try:
        covered = sum(abs(page.get_image_bbox(image)) for image in page.get_images(full=True))
    except Exception:
        covered = 0.0
    return area > 0 and covered / area >= MIN_IMAGE_AREA


class PageRecognizer:
    """Recognises rendered pages with one engine; the RapidOCR models load on first use, once per process."""

    def __init__(self, engine: str, dpi: int = OCR_DPI):
        self.engine = engine
        self.dpi = dpi
        self._rapid: Any = None

    def lines(self, page: Any) -> list[str]:
        """The recognised text lines of a PyMuPDF page, top to bottom; [] when nothing is recognised."""
        if self.engine == "tesseract":
            textpage = page.get_textpage_ocr(dpi=self.dpi, full=True)
            return unicodedata.normalize("NFKC", page.get_text("text", textpage=textpage)).splitlines()
        return self._rapidocr_lines(page)

    def _rapidocr_lines(self, page: Any) -> list[str]:
        import numpy as np
        import pymupdf

        if self._rapid is None:
            from rapidocr_onnxruntime import RapidOCR

            self._rapid = RapidOCR(use_cls=False, intra_op_num_threads=2, inter_op_num_threads=1)
        pixmap = page.get_pixmap(dpi=self.dpi, colorspace=pymupdf.csRGB, alpha=False)
        image = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, 3)
        result, _ = self._rapid(image[:, :, ::-1].copy())  # RapidOCR takes OpenCV's BGR order
        return [unicodedata.normalize("NFKC", str(text)) for _, text, _ in _reading_order(result or [])]


def _reading_order(boxes: list[Any]) -> list[Any]:
    """Detected lines sorted into rows (top to bottom), each row left to right."""
    def top(item: Any) -> float:
        return float(min(point[1] for point in item[0]))

    def left(item: Any) -> float:
        return float(min(point[0] for point in item[0]))

    def height(item: Any) -> float:
        return float(max(point[1] for point in item[0])) - top(item)

    ordered: list[Any] = []
    row: list[Any] = []
    for item in sorted(boxes, key=top):
        if row and top(item) > top(row[0]) + 0.5 * max(1.0, height(row[0])):
            ordered.extend(sorted(row, key=left))
            row = []
        row.append(item)
    ordered.extend(sorted(row, key=left))
    return ordered
