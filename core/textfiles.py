"""Markdown, plain text and HTML -> parts to index: sections under headings, or blocks of lines.

Markdown is cut at its headings (a part is labelled "§ Heading"); plain text at blank lines (a part
is labelled with its line range, "lines 10-24"). HTML goes through trafilatura, which keeps the main
text of a page (no menus, footers or ads) and writes it as Markdown, then is cut like Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from core.documents import PageText
from core.formats import ACCEPTED
from core.pdf import DocumentError, clean_text

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
MAX_HTML_DEPTH = 2048  # libxml2's nesting limit with XML_PARSE_HUGE


def decode_text(data: bytes, file_name: str) -> str:
    """UTF-8 (with or without a byte-order mark), else Windows-1252; binary data is refused."""
    if b"\x00" in data[:4096]:
        raise DocumentError(f"{file_name} is binary data, not text; the formats I index are {ACCEPTED}.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def text_parts(text: str) -> Iterator[PageText]:
    """One part per paragraph (lines between blank lines), labelled "lines A-B" (1-based)."""
    number = 0
    block: list[str] = []
    start = 0
    for index, line in enumerate([*text.splitlines(), ""], start=1):
        if line.strip():
            if not block:
                start = index
            block.append(line)
        elif block:
            number += 1
            end = start + len(block) - 1
            yield PageText(number, clean_text("\n".join(block)), f"line {start}" if end == start
                           else f"lines {start}-{end}")
            block = []


def markdown_parts(text: str, fixed_label: str = "") -> Iterator[PageText]:
    """One part per section, labelled "§ Heading" (or ``fixed_label`` for every part when given)."""
    label = "start of the document"
    lines: list[str] = []
    number = 0
    in_code = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        heading = None if in_code else _HEADING.match(line)
        if heading:
            if any(part.strip() for part in lines):
                number += 1
                yield PageText(number, clean_text("\n".join(lines)), fixed_label or label)
            title = heading.group(2).strip()
            label = f"§ {title}"
            lines = [title if title[-1] in ".!?:" else title + "."]
        else:
            lines.append(line)
    if any(part.strip() for part in lines):
        yield PageText(number + 1, clean_text("\n".join(lines)), fixed_label or label)


def html_to_markdown(html: str) -> tuple[str, str, list[str]]:
    """The page's main text as Markdown, its title ("" when it has none), and what could not be read.

    The page is parsed by lxml with libxml2's large-document option, so text nested up to
    :data:`MAX_HTML_DEPTH` elements deep is kept (libxml2 otherwise stops at 256 and drops what lies
    deeper without an error); deeper text is still lost, and the returned notes say so.
    """
    import lxml.html
    import trafilatura

    parser = lxml.html.HTMLParser(huge_tree=True, collect_ids=False, remove_comments=True, remove_pis=True)
    dropped: list[str] = []
    try:
        tree = lxml.html.document_fromstring(html, parser=parser)
    except (ValueError, lxml.etree.ParserError):  # nothing parseable: trafilatura finds no text either
        return "", "", dropped
    if any("Excessive depth" in str(error.message) for error in parser.error_log):
        dropped.append(f"Text nested more than {MAX_HTML_DEPTH:,} elements deep could not be read and was not "
                       "indexed.")
    markdown = trafilatura.extract(tree, output_format="markdown", include_formatting=True, include_tables=True,
                                   include_comments=False, include_links=False, favor_recall=True) or ""
    metadata = trafilatura.extract_metadata(tree)
    title = (metadata.title if metadata is not None else None) or ""
    return markdown, title.strip(), dropped
