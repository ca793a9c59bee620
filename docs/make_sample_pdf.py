"""Render docs/handbook.md into the sample PDF that `make run` indexes on first start.

Run: .venv/bin/python docs/make_sample_pdf.py  (the result is committed as phobos/samples/phobos-handbook.pdf)
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pymupdf

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "docs" / "handbook.md"
TARGET = ROOT / "phobos" / "samples" / "phobos-handbook.pdf"
PAGE = pymupdf.paper_rect("a6")  # small pages, so the handbook spans several and citations vary
MARGIN = 24
CONTENT = pymupdf.Rect(PAGE.x0 + MARGIN, PAGE.y0 + MARGIN, PAGE.x1 - MARGIN, PAGE.y1 - MARGIN)


def markdown_to_html(text: str) -> str:
    parts = []
    for block in text.strip().split("\n\n"):
        block = html.escape(block.strip())
        block = re.sub(r"`([^`]+)`", r"<code>\1</code>", block)
        if block.startswith("## "):
            parts.append(f"<h2>{block[3:]}</h2>")
        elif block.startswith("# "):
            parts.append(f"<h1>{block[2:]}</h1>")
        else:
            parts.append(f"<p>{block}</p>")
    return "\n".join(parts)


def main() -> None:
    story = pymupdf.Story(html=markdown_to_html(SOURCE.read_text()))
    writer = pymupdf.DocumentWriter(str(TARGET))
    more = True
    while more:
        device = writer.begin_page(PAGE)
        more, _ = story.place(CONTENT)
        story.draw(device)
        writer.end_page()
    writer.close()
    with pymupdf.open(TARGET) as doc:
        doc.set_metadata({"title": "The Phobos Handbook", "author": "The Phobos authors"})
        doc.saveIncr()
        print(f"{TARGET.relative_to(ROOT)}: {doc.page_count} pages")


if __name__ == "__main__":
    main()
