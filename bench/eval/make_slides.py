"""Builds a slide-like PDF (landscape pages, a heading and a few short lines each) from a Markdown outline.

usage: make_slides.py OUTLINE.md OUT.pdf
The outline is '# Heading' lines, each followed by the slide's lines; the first slide is the title slide.
"""

import sys
from pathlib import Path

import pymupdf

WIDTH_PT, HEIGHT_PT = 960, 540  # 16:9, like a presentation exported to PDF


def read_outline(text: str) -> list[tuple[str, list[str]]]:
    """Slides as (heading, lines) pairs, in order."""
    slides: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# "):
            slides.append((line[2:].strip(), []))
        elif line and slides:
            slides[-1][1].append(line)
    return slides


def build(slides: list[tuple[str, list[str]]], out: Path) -> None:
    """Writes one landscape page per slide: a large heading, then bulleted lines (plain lines on the title slide)."""
    doc = pymupdf.open()
    for number, (heading, lines) in enumerate(slides, start=1):
        page = doc.new_page(width=WIDTH_PT, height=HEIGHT_PT)
        if number == 1:
            page.insert_text((80, 220), heading, fontsize=44, fontname="hebo")
            for i, line in enumerate(lines):
                page.insert_text((80, 290 + 40 * i), line, fontsize=26, fontname="helv")
        else:
            page.draw_rect(pymupdf.Rect(0, 0, WIDTH_PT, 100), color=None, fill=(0.12, 0.25, 0.45))
            page.insert_text((60, 68), heading, fontsize=38, fontname="hebo", color=(1, 1, 1))
            for i, line in enumerate(lines):
                page.insert_text((80, 180 + 62 * i), "\u00b7  " + line, fontsize=28, fontname="helv")
            page.insert_text((WIDTH_PT - 60, HEIGHT_PT - 24), str(number), fontsize=14, fontname="helv")
    doc.set_metadata({"title": slides[0][0]})
    doc.save(out)


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    build(read_outline(source.read_text(encoding="utf-8")), target)
