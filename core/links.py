"""Links in a message -> documents indexed in that conversation, one note per link for the reply.

A question (or a message) with http(s) links first gets the page or PDF behind each link indexed in its
scope, through the guarded fetcher (:mod:`core.fetch`) and the same sandboxed reader as uploads; then
the question is answered from everything shared there, the new pages included. A link indexed here
before is not fetched again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from core.embedding import Embedder
from core.fetch import FetchRefused, GuardedFetcher
from core.index import DocumentStore
from core.ingest import IngestLimits, Progress, ingest_document
from core.pdf import DocumentError

_LINK = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s<>|\"']+")
_TRAILING = ".,;:!?)]}'\""


def links_in(text: str, most: int) -> tuple[list[str], list[str]]:
    """The links in a message, in order, without repeats: (the first ``most``, the rest).

    Any scheme is found, so that a file:// or ftp:// link gets a reply saying why it was not fetched.
    """
    unique = list(dict.fromkeys(match.rstrip(_TRAILING) for match in _LINK.findall(text)))
    return unique[:most], unique[most:]


def without_links(text: str) -> str:
    """The message with its links taken out; Slack's <link|label> keeps its label."""
    text = re.sub(r"<[a-zA-Z][\w+.-]*://[^>|]*(?:\|([^>]*))?>", lambda m: m.group(1) or " ", text)
    return re.sub(r"\s+", " ", _LINK.sub(" ", text)).strip()


def index_links(text: str, scope_key: str, fetcher: GuardedFetcher, embedder: Embedder, store: DocumentStore,
                limits: IngestLimits, max_links: int, user: str = "",
                progress: Progress | None = None, between_slices: Callable[[], None] | None = None) -> list[str]:
    """Fetch and index each link in ``text`` into ``scope_key``; one line per link for the reply."""
    urls, skipped = links_in(text, max_links)
    report = progress or (lambda done, total, what: None)
    known = {doc.source_url for doc in store.list_documents([scope_key]) if doc.source_url}
    notes: list[str] = []
    for number, url in enumerate(urls, start=1):
        if url in known:
            continue
        report(number - 1, len(urls), f"fetching {url}")
        try:
            fetched = fetcher.fetch(url)
            name = PurePosixPath(urlsplit(fetched.url).path).name or urlsplit(fetched.url).hostname or url
            result = ingest_document(fetched.data, name, scope_key, embedder, store, limits, user=user,
                                     progress=progress, between_slices=between_slices, kind=fetched.kind,
                                     source_url=url)
        except FetchRefused as exc:
            notes.append(f"Not indexed: {exc}")
        except DocumentError as exc:
            notes.append(f"Not indexed: {url}: {exc}")
        else:
            notes.append(result.summary())
    notes += [f"Not indexed: {url} (only the first {max_links} links of a message are followed)." for url in skipped]
    return notes
