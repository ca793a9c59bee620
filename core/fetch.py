"""Fetch what a link in a message points to, without letting the link reach inside the network (SSRF).

Every hop (the first URL and each redirect) is checked before a byte is sent: the scheme is http or
https; the host name is resolved here and every address it resolves to must be public (no loopback,
private, carrier-grade NAT, link-local and cloud metadata, multicast, reserved or unspecified ranges, and
the IPv6 forms of all of them, IPv4-mapped, 6to4 and Teredo included). The connection is then made to
the address that was checked, not to the name, and the address of the socket actually connected is
checked again, so a name that resolves to a public address for the check and to 10.0.0.1 for the
connection (DNS rebinding) still cannot get in. TLS is verified against the host name. The body is
read with a size limit, the whole fetch with a wall-time limit, redirects with a count limit, and only
the content types the indexer reads are accepted. Each refusal raises :class:`FetchRefused` with a
message for the person who posted the link.

Written on the standard library (http.client, ssl, ipaddress) because the guard has to sit between
name resolution and the connection, which HTTP client libraries do not expose as one step.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from core.pdf import DocumentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]  # (host, port) -> the addresses it resolves to

# content type -> the kind of document core.ingest reads
CONTENT_TYPES = {"text/html": "html", "application/xhtml+xml": "html", "text/plain": "txt",
                 "text/markdown": "md", "application/pdf": "pdf"}
REDIRECTS = (301, 302, 303, 307, 308)
READ_BYTES = 64 * 1024
USER_AGENT = "Phobos/1 (indexes links shared in a chat)"


class FetchRefused(DocumentError):
    """A link that was not fetched; ``reason`` is one word for code (scheme, address, size, time, type,
    redirects, status, network), ``str()`` a message for the person."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20_000_000
    timeout_s: float = 20.0  # the whole fetch, redirects included
    max_redirects: int = 5
    allow_nets: tuple[Network, ...] = ()  # fetched although not public: tests, or an intranet on purpose

    @staticmethod
    def parse_nets(text: str) -> tuple[Network, ...]:
        """``"127.0.0.2/32, 10.1.0.0/16"`` -> networks; raises ValueError for a malformed one."""
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    data: bytes
    kind: str  # a key of core.formats.KINDS
    content_type: str
    redirects: list[str] = field(default_factory=list)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as the operating system resolves it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address; IPv6 forms that carry an IPv4 address are judged by it."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return is_public(embedded)
        if address in ipaddress.ip_network("64:ff9b::/96"):  # NAT64: the last 32 bits are an IPv4 address
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return bool(address.is_global and not (address.is_multicast or address.is_reserved or address.is_loopback
                                           or address.is_link_local or address.is_private
                                           or address.is_unspecified))


class GuardedFetcher:
    """Fetches one URL at a time under :class:`FetchLimits`; ``resolve`` is injectable for tests."""

    def __init__(self, limits: FetchLimits, resolve: Resolver = system_resolver):
        self.limits = limits
        self.resolve = resolve

    def fetch(self, url: str) -> Fetched:
        """The body and kind of the document at ``url``. Raises :class:`FetchRefused` with the reason."""
        deadline = time.monotonic() + self.limits.timeout_s
        redirects: list[str] = []
        current = url
        while True:
            try:
                response, connection = self._request(current, deadline)
            except FetchRefused as exc:
                if redirects:  # name the link the person posted, then where it led
                    raise FetchRefused(exc.reason, f"{url} redirects to {exc}") from exc
                raise
            except TimeoutError as exc:
                raise self._too_slow(url) from exc
            except ssl.SSLError as exc:
                raise FetchRefused("network", f"{current} could not be fetched: its TLS certificate or "
                                   f"connection is not valid ({exc.reason or exc}).") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise FetchRefused("network", f"{current} could not be fetched ({type(exc).__name__}: {exc}).") \
                    from exc
            try:
                if response.status in REDIRECTS:
                    location = response.getheader("Location")
                    if not location:
                        raise FetchRefused("status", f"{current} redirects without saying where to.")
                    if len(redirects) >= self.limits.max_redirects:
                        raise FetchRefused("redirects", f"{url} redirects more than {self.limits.max_redirects} "
                                           "times, so it was not followed to the end.")
                    current = urljoin(current, location)
                    redirects.append(current)
                    continue
                if response.status != 200:
                    raise FetchRefused("status", f"{current} answered HTTP {response.status} "
                                       f"{response.reason}; nothing was indexed from it.")
                kind, content_type = self._kind(current, response)
                data = self._body(current, response, connection, deadline)
                return Fetched(current, data, kind, content_type, redirects)
            except TimeoutError as exc:
                raise self._too_slow(url) from exc
            finally:
                connection.close()

    # --- one hop ---

    def _request(self, url: str, deadline: float) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchRefused("scheme", f"{url} is not an http or https link ({scheme or 'no'} scheme); "
                               "only web links are fetched.")
        host = parts.hostname
        if not host:
            raise FetchRefused("scheme", f"{url} has no host name.")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise FetchRefused("scheme", f"{url} has an invalid port.") from exc
        address = self._checked_address(url, host, port)
        timeout = self._remaining(url, deadline)
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = _PinnedHTTPS(host, port, address, lambda peer: self._check_peer(url, peer), timeout)
        else:
            connection = _PinnedHTTP(host, port, address, lambda peer: self._check_peer(url, peer), timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                                     "Accept": "text/html,application/pdf,text/plain;q=0.9"})
            return connection.getresponse(), connection
        except BaseException:
            connection.close()
            raise

    def _checked_address(self, url: str, host: str, port: int) -> str:
        """The address to connect to: ``host`` resolved, every address it has public (or allowed)."""
        try:
            addresses = [host] if _is_ip(host) else self.resolve(host, port)
        except OSError as exc:
            raise FetchRefused("network", f"{url} could not be fetched: the name {host} does not resolve.") from exc
        if not addresses:
            raise FetchRefused("network", f"{url} could not be fetched: the name {host} does not resolve.")
        for address in addresses:
            self._require_public(url, host, address)
        return addresses[0]

    def _check_peer(self, url: str, peer: str) -> None:
        """The address of the socket actually connected: checked again, whatever the name resolved to."""
        self._require_public(url, urlsplit(url).hostname or "", peer)

    def _require_public(self, url: str, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in net for net in self.limits.allow_nets) or is_public(ip):
            return
        via = "" if host == address else f" ({host} resolves to {ip})"
        raise FetchRefused("address", f"{url} points inside a private network{via}; links to local, private, "
                           "link-local, metadata or multicast addresses are never fetched.")

    def _remaining(self, url: str, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow(url)
        return left

    def _too_slow(self, url: str) -> FetchRefused:
        return FetchRefused("time", f"{url} took longer than the {self.limits.timeout_s:.0f} s allowed to fetch, "
                            "so it was given up.")

    def _kind(self, url: str, response: http.client.HTTPResponse) -> tuple[str, str]:
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        kind = CONTENT_TYPES.get(content_type)
        if kind is None:
            raise FetchRefused("type", f"{url} is {content_type or 'of no stated type'}; only web pages (HTML), "
                               "PDFs and plain text are indexed from links.")
        return kind, content_type

    def _body(self, url: str, response: http.client.HTTPResponse, connection: http.client.HTTPConnection,
              deadline: float) -> bytes:
        limit = self.limits.max_bytes
        too_big = FetchRefused("size", f"{url} is larger than the {limit / 1e6:.0f} MB allowed for a link.")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        parts: list[bytes] = []
        size = 0
        while True:
            if connection.sock is not None:
                connection.sock.settimeout(self._remaining(url, deadline))
            piece = response.read1(READ_BYTES)
            if not piece:
                return b"".join(parts)
            size += len(piece)
            if size > limit:
                raise too_big
            parts.append(piece)
            self._remaining(url, deadline)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _checked_socket(address: str, port: int, timeout: float | None, check: Callable[[str], None]) -> socket.socket:
    """A connection to ``address``, whose peer (the address actually connected) passes ``check``."""
    sock = socket.create_connection((address, port), timeout)
    try:
        check(str(sock.getpeername()[0]))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address, sending the URL's host name in the Host header."""

    def __init__(self, host: str, port: int, address: str, check: Callable[[str], None], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self._check = check

    def connect(self) -> None:
        self.sock = _checked_socket(self._address, self.port, self.timeout, self._check)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """:class:`_PinnedHTTP` with TLS, the certificate verified against the URL's host name."""

    def __init__(self, host: str, port: int, address: str, check: Callable[[str], None], timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address
        self._check = check

    def connect(self) -> None:
        sock = _checked_socket(self._address, self.port, self.timeout, self._check)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
