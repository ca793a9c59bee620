"""The guarded fetcher against a real HTTP server on 127.0.0.2, allowed through the test-only allow-list;
every refusal is proved on a real request (or before one, where the guard must not connect at all)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.fetch import FetchLimits, FetchRefused, GuardedFetcher, is_public
from core.links import links_in, without_links
from tests.pdfs import FACT_PAGES, pdf_with_pages

SERVER_IP = "127.0.0.2"  # allowed by the tests' allow-list; 127.0.0.1 is not
ARTICLE = ("<html><head><title>Crater lakes of the north</title></head><body><nav>Home | Archive</nav>"
           "<article><h1>Crater lakes</h1><p>" + FACT_PAGES[2] + "</p></article></body></html>")


class LinkServer:
    """A small site with a route for each case; ``/slow`` waits until the test ends."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hosts: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.hosts.append(self.headers.get("Host", ""))
                route = ROUTES.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                route(self, server)

        self.httpd = ThreadingHTTPServer((SERVER_IP, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{SERVER_IP}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(handler: BaseHTTPRequestHandler, body: bytes, content_type: str, status: int = 200,
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _redirect(handler: BaseHTTPRequestHandler, location: str) -> None:
    _send(handler, b"", "text/plain", 302, {"Location": location})


def _big(handler: BaseHTTPRequestHandler, server: LinkServer) -> None:
    """No Content-Length: the size is only found out while reading."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.end_headers()
    for _ in range(64):
        handler.wfile.write(b"x" * 65536)


def _slow(handler: BaseHTTPRequestHandler, server: LinkServer) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"<html>")
    handler.wfile.flush()
    server.release.wait(120)  # holds the rest back until the test is over


ROUTES = {
    "/article": lambda h, s: _send(h, ARTICLE.encode(), "text/html; charset=utf-8"),
    "/facts.pdf": lambda h, s: _send(h, pdf_with_pages(FACT_PAGES), "application/pdf"),
    "/moved": lambda h, s: _redirect(h, "/article"),
    "/to-loopback": lambda h, s: _redirect(h, f"http://127.0.0.1:{s.port}/article"),
    "/to-metadata": lambda h, s: _redirect(h, "http://169.254.169.254/latest/meta-data/"),
    "/to-file": lambda h, s: _redirect(h, "file:///etc/passwd"),
    "/loop": lambda h, s: _redirect(h, "/loop"),
    "/big": _big,
    "/big-declared": lambda h, s: _send(h, b"x" * 300_000, "text/plain"),
    "/slow": _slow,
    "/image": lambda h, s: _send(h, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png"),
    "/missing": lambda h, s: h.send_error(404),
}


@pytest.fixture
def site() -> Iterator[LinkServer]:
    server = LinkServer()
    yield server
    server.close()


LIMITS = FetchLimits(max_bytes=200_000, timeout_s=3.0, max_redirects=3,
                     allow_nets=(ipaddress.ip_network(f"{SERVER_IP}/32"),))


def refusal(url: str, limits: FetchLimits = LIMITS, **resolver: list[str]) -> FetchRefused:
    fetcher = GuardedFetcher(limits, resolve=(lambda host, port: resolver[host.replace(".", "_")])
                             if resolver else GuardedFetcher(limits).resolve)
    with pytest.raises(FetchRefused) as refused:
        fetcher.fetch(url)
    assert url in str(refused.value)  # every refusal names the link it refused
    return refused.value


def test_an_article_and_a_pdf_are_fetched(site: LinkServer) -> None:
    fetcher = GuardedFetcher(LIMITS)
    page = fetcher.fetch(site.url("/article"))
    assert page.kind == "html" and b"turquoise" in page.data
    pdf = fetcher.fetch(site.url("/facts.pdf"))
    assert pdf.kind == "pdf" and pdf.data.startswith(b"%PDF-")
    moved = fetcher.fetch(site.url("/moved"))
    assert moved.url == site.url("/article") and moved.redirects == [site.url("/article")]


def test_the_connection_goes_to_the_checked_address_and_names_the_host(site: LinkServer) -> None:
    """A name the system cannot resolve is fetched through the injected resolver's address only."""
    fetcher = GuardedFetcher(LIMITS, resolve=lambda host, port: [SERVER_IP] if host == "docs.example.test" else [])
    page = fetcher.fetch(f"http://docs.example.test:{site.port}/article")
    assert b"turquoise" in page.data and site.hosts[-1] == f"docs.example.test:{site.port}"


@pytest.mark.parametrize("url", ["ftp://files.example.com/report.pdf", "file:///etc/passwd",
                                 "gopher://example.com/", "javascript://alert(1)"])
def test_other_schemes_are_refused(url: str) -> None:
    assert refusal(url).reason == "scheme"


def test_a_redirect_to_loopback_is_refused(site: LinkServer) -> None:
    refused = refusal(site.url("/to-loopback"))
    assert refused.reason == "address" and "127.0.0.1" not in site.hosts[-1]
    assert len(site.hosts) == 1  # the redirect's target was never contacted (it is the same server on .1)


def test_a_redirect_to_the_metadata_address_or_a_file_is_refused(site: LinkServer) -> None:
    assert refusal(site.url("/to-metadata")).reason == "address"
    assert refusal(site.url("/to-file")).reason == "scheme"


def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    refused = refusal("http://intranet.example.com/wiki", intranet_example_com=["10.0.0.1"])
    assert refused.reason == "address" and "10.0.0.1" in str(refused)


def test_a_name_with_any_private_address_is_refused() -> None:
    """Public and private together: the connection could go to either, so neither is used."""
    refused = refusal("https://mixed.example.com/", mixed_example_com=["93.184.215.14", "192.168.1.10"])
    assert refused.reason == "address"


@pytest.mark.parametrize("address", ["127.0.0.1", "[::1]", "[::ffff:10.0.0.1]", "169.254.169.254", "0.0.0.0",
                                     "[fe80::1]", "224.0.0.1", "100.64.0.1", "[fd00:ec2::254]", "[2002:a00:1::]",
                                     "240.0.0.1", "[64:ff9b::a00:1]"])
def test_literal_private_addresses_are_refused(address: str) -> None:
    assert refusal(f"http://{address}/").reason == "address"


def test_public_addresses_pass_the_check() -> None:
    assert is_public(ipaddress.ip_address("93.184.215.14"))
    assert is_public(ipaddress.ip_address("2606:4700::6810:84e5"))


def test_too_big_is_refused_while_reading_and_when_declared(site: LinkServer) -> None:
    assert refusal(site.url("/big")).reason == "size"
    assert refusal(site.url("/big-declared")).reason == "size"


def test_too_slow_is_refused(site: LinkServer) -> None:
    assert refusal(site.url("/slow")).reason == "time"


def test_a_content_type_not_indexed_is_refused(site: LinkServer) -> None:
    refused = refusal(site.url("/image"))
    assert refused.reason == "type" and "image/png" in str(refused)


def test_too_many_redirects_are_refused(site: LinkServer) -> None:
    assert refusal(site.url("/loop")).reason == "redirects"


def test_an_error_status_is_refused(site: LinkServer) -> None:
    assert refusal(site.url("/missing")).reason == "status"


def test_links_are_found_in_chat_text() -> None:
    text = ("See <https://example.com/a|the article>, https://example.com/b. and (http://x.org/c) "
            "again https://example.com/b and ftp://f.example/z")
    first, rest = links_in(text, most=3)
    assert first == ["https://example.com/a", "https://example.com/b", "http://x.org/c"]
    assert rest == ["ftp://f.example/z"]
    assert without_links(text) == "See the article, and ( again and"


def test_the_connected_socket_is_checked_whatever_the_name_resolved_to(site: LinkServer) -> None:
    """The last guard against DNS rebinding: the peer address of the socket itself must pass."""
    from core.fetch import _PinnedHTTP

    def refuse(peer: str) -> None:
        raise FetchRefused("address", f"peer {peer} refused")

    connection = _PinnedHTTP("docs.example.test", site.port, SERVER_IP, refuse, timeout=10)
    with pytest.raises(FetchRefused, match=f"peer {SERVER_IP} refused"):
        connection.request("GET", "/article")
    connection.close()
    assert site.hosts == []  # nothing was sent
