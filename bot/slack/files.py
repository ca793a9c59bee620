"""Downloading a file shared in Slack, without ever handing the bot token to anyone but Slack."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from bot.slack.limits import DEFAULT_FILE_HOSTS
from core.formats import accepted_name
from core.text_safety import escape_name

MAX_REDIRECTS = 3
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 64 * 1024
PDF_MIMETYPE = "application/pdf"


class FileRejected(Exception):
    """The file cannot be fetched; the message says why, in words a person can act on."""


@dataclass(frozen=True)
class SharedFile:
    """The fields of a Slack file object that the adapter uses."""

    id: str
    name: str
    url: str  # url_private_download, else url_private
    permalink: str
    size: int  # bytes, as Slack reports it
    is_pdf: bool

    @classmethod
    def from_event(cls, raw: Mapping[str, Any]) -> SharedFile:
        # Escaped once here: the status line, the permalink map and the stored document all use this name.
        name = escape_name(str(raw.get("name") or raw.get("title") or raw.get("id") or "file"))
        is_pdf = (raw.get("filetype") == "pdf" or raw.get("mimetype") == PDF_MIMETYPE
                  or accepted_name(name))  # any format the worker indexes, not only PDFs
        return cls(id=str(raw.get("id", "")), name=name,
                   url=str(raw.get("url_private_download") or raw.get("url_private") or ""),
                   permalink=str(raw.get("permalink") or ""), size=int(raw.get("size") or 0), is_pdf=is_pdf)


def is_slack_host(url: str, hosts: Collection[str], schemes: Collection[str]) -> bool:
    """True when ``url`` is on one of Slack's file hosts (exact host names, no suffix games)."""
    parts = urlsplit(url)
    return parts.scheme in schemes and (parts.hostname or "") in hosts


async def download(session: aiohttp.ClientSession, url: str, token: str, *, max_bytes: int,
                   hosts: Collection[str] = DEFAULT_FILE_HOSTS,
                   schemes: Collection[str] = ("https",)) -> bytes:
    """The bytes at ``url``, fetched with the bot token.

    The token goes only to ``hosts``: a URL elsewhere is refused before any request, and a redirect is
    followed by hand so that a hop off those hosts is fetched without the token. At most ``max_bytes``
    are read, whatever Content-Length claims.
    """
    if not is_slack_host(url, hosts, schemes):
        raise FileRejected("That file is not hosted on Slack, so I did not download it.")
    for _hop in range(MAX_REDIRECTS + 1):
        headers = {"Authorization": f"Bearer {token}"} if is_slack_host(url, hosts, schemes) else {}
        async with session.get(url, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)) as resp:
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status != 200:
                raise FileRejected(f"Slack answered {resp.status} when I tried to download the file.")
            # Without files:read, Slack serves its sign-in page with a 200 instead of the file.
            if resp.content_type == "text/html":
                raise FileRejected("Slack sent a web page instead of the file; does the app have the "
                                   "files:read scope?")
            if (resp.content_length or 0) > max_bytes:
                raise FileRejected(too_large(max_bytes))
            body = bytearray()
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                body += chunk
                if len(body) > max_bytes:
                    raise FileRejected(too_large(max_bytes))
            return bytes(body)
    raise FileRejected("The file download redirected too many times.")


def too_large(max_bytes: int) -> str:
    """The refusal for a file over the size limit."""
    return f"That file is larger than the {max_bytes / 1e6:g} MB I accept."
