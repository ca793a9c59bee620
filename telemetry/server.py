"""The HTTP port of a long-running process: /metrics (Prometheus), /healthz (alive), /readyz (can serve).

Served by the standard library's WSGI server in a daemon thread; prometheus-client renders /metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import REGISTRY, make_wsgi_app

from jobs.connection import RedisOptions, redis_client
from telemetry.metrics import RedisCollector

log = logging.getLogger(__name__)
REDIS_PING_TIMEOUT_S = 2.0


class Health:
    """Readiness: the process says it has loaded what it needs, and Redis answers a PING."""

    def __init__(self, client: redis.Redis):
        self.redis = client
        self.loaded = threading.Event()

    def mark_loaded(self) -> None:
        self.loaded.set()

    def problems(self) -> list[str]:
        found = [] if self.loaded.is_set() else ["models loading"]
        try:
            self.redis.ping()
        except (redis.RedisError, OSError) as exc:
            found.append(f"redis unreachable: {type(exc).__name__}")
        return found


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds are not news
        pass


def _app(health: Health) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            problems = health.problems()
            status = "503 Service Unavailable" if problems else "200 OK"
            start_response(status, [("Content-Type", "text/plain")])
            return [("; ".join(problems) or "ready").encode() + b"\n"]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /healthz, /readyz\n"]

    return app


def serve(host: str, port: int, redis_url: str) -> Health:
    """Start the port in a daemon thread; the caller marks the returned :class:`Health` loaded when ready."""
    client = redis_client(redis_url, RedisOptions(socket_timeout_s=REDIS_PING_TIMEOUT_S,
                                                  connect_timeout_s=REDIS_PING_TIMEOUT_S))
    health = Health(client)
    REGISTRY.register(RedisCollector(client))
    server = make_server(host, port, _app(health), server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics, /healthz and /readyz on http://%s:%d", host, port)
    return health
