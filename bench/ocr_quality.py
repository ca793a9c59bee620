"""OCR quality and speed on scanned R manual pages, as JSON: character accuracy against the text layer, pages/s.

Pages of R-lang.pdf (bench/data/R-lang-p9-12.pdf, 4 pages copied from the r-doc-pdf package, or any PDF
given with --pdf) are rendered to grayscale images at 150 and 300 dpi and rebuilt as a PDF with no text
layer, like a scan. Each scan is read through the real sandboxed reader (core/pdf_sandbox.py) with each
OCR engine that is installed, and its page texts compared with the same reader's text of the original
PDF (same cleaning on both sides). Character accuracy = 1 - Levenshtein distance / reference length,
after collapsing whitespace. pages/s counts the whole read, the child's start and model load included;
CPU s/page is the reading child's CPU time (user + system) per page, which a busy machine changes less.

    .venv/bin/python bench/ocr_quality.py [--pdf FILE] [--dpi 150 300] [--engines rapidocr tesseract]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from common import ROOT

SAMPLE = ROOT / "bench" / "data" / "R-lang-p9-12.pdf"


def scan(data: bytes, dpi: int) -> bytes:
    """The PDF as a scanner would give it: one grayscale image per page, no text."""
    import pymupdf

    source = pymupdf.open(stream=data, filetype="pdf")
    out = pymupdf.open()
    for page in source:
        pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        target = out.new_page(width=page.rect.width, height=page.rect.height)
        target.insert_image(target.rect, stream=pixmap.tobytes("png"))
    return bytes(out.tobytes(deflate=True))


def read(data: bytes, ocr_engine: str | None) -> tuple[list[str], list[int], float, float]:
    """Page texts, the OCR'd page numbers, wall seconds and the reading child's CPU seconds."""
    import resource

    from core.pdf_sandbox import ParseLimits, SandboxedPdf

    limits = ParseLimits(timeout_s=1800, max_memory_mb=4096, ocr=ocr_engine is not None,
                         ocr_engine=ocr_engine or "rapidocr")
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    started, cpu_before = time.perf_counter(), cpu()
    with SandboxedPdf(data, "bench.pdf", limits) as pdf:
        texts = [page.text for page in pdf.pages()]
        ocr_pages = list(pdf.ocr_pages)
    return texts, ocr_pages, time.perf_counter() - started, cpu() - cpu_before


def accuracy(reference: str, recognised: str) -> float:
    from rapidfuzz.distance import Levenshtein

    ref, got = (re.sub(r"\s+", " ", text).strip() for text in (reference, recognised))
    return max(0.0, 1 - Levenshtein.distance(ref, got) / max(1, len(ref)))


def main() -> None:
    from core.ocr import OCR_DPI, available

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=SAMPLE)
    parser.add_argument("--dpi", type=int, nargs="+", default=[150, 300])
    parser.add_argument("--engines", nargs="+", default=["rapidocr", "tesseract"])
    args = parser.parse_args()
    original = args.pdf.read_bytes()
    reference, _, _, _ = read(original, None)
    runs: list[dict[str, object]] = []
    measured: dict[tuple[str, int], tuple[float, float]] = {}  # (engine, dpi) -> (accuracy, pages/s)
    for engine in args.engines:
        if not available(engine):
            runs.append({"engine": engine, "available": False})
            continue
        for dpi in args.dpi:
            texts, ocr_pages, seconds, cpu_s = read(scan(original, dpi), engine)
            per_page = [round(accuracy(ref, got), 4) for ref, got in zip(reference, texts, strict=True)]
            mean, speed = sum(per_page) / len(per_page), len(texts) / seconds
            measured[(engine, dpi)] = (mean, speed)
            runs.append({"engine": engine, "scan_dpi": dpi, "ocr_pages": len(ocr_pages),
                         "char_accuracy": round(mean, 4), "char_accuracy_per_page": per_page,
                         "seconds": round(seconds, 2), "pages_per_s": round(speed, 3),
                         "cpu_s_per_page": round(cpu_s / len(texts), 2)})
    ratios = {f"{engine}_{high}_vs_{low}": {"char_accuracy": round(measured[(engine, high)][0]
                                                                  / max(1e-9, measured[(engine, low)][0]), 3),
                                           "pages_per_s": round(measured[(engine, high)][1]
                                                                / measured[(engine, low)][1], 3)}
              for engine in args.engines for low, high in zip(args.dpi, args.dpi[1:], strict=False)
              if (engine, low) in measured and (engine, high) in measured}
    shown = args.pdf.relative_to(ROOT) if args.pdf.is_relative_to(ROOT) else args.pdf
    print(json.dumps({"pdf": str(shown), "pages": len(reference), "reference_chars": sum(map(len, reference)),
                      "ocr_render_dpi": OCR_DPI, "runs": runs, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
