"""Every Redis client Phobos opens (workers, adapters, the CLI) comes from here, with timeouts on.

Without a socket timeout a connection whose peer vanished without a FIN (a half-open connection: a
NAT or load balancer dropped its state, a host lost power) blocks a read forever, e.g. a worker in
XREADGROUP. With one, the read raises TimeoutError, redis-py drops the connection, and the caller's
retry opens a fresh one. TCP keepalive finds such connections while idle, and a health check PINGs a
pooled connection that sat unused before reusing it. The socket timeout must exceed the longest
blocking read (``BLOCK``) any caller issues; Phobos blocks for at most a few seconds.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis


@dataclass(frozen=True)
class RedisOptions:
    """How long to wait on Redis before presuming a connection dead (the settings hold the deployed values)."""

    socket_timeout_s: float = 10.0  # a reply slower than this: the connection is dropped and reopened
    connect_timeout_s: float = 5.0
    keepalive_idle_s: int = 30  # TCP keepalive: idle time before the first probe
    keepalive_interval_s: int = 5  # between probes; 3 unanswered probes close the connection
    health_check_interval_s: int = 5  # PING a pooled connection unused for this long before reusing it


KEEPALIVE_PROBES = 3


def connection_kwargs(url: str, options: RedisOptions) -> dict[str, Any]:
    """Keyword arguments for ``from_url`` (sync or asyncio) that apply ``options`` to ``url``'s connections."""
    kwargs: dict[str, Any] = {"socket_timeout": options.socket_timeout_s,
                              "socket_connect_timeout": options.connect_timeout_s,
                              "health_check_interval": options.health_check_interval_s}
    if not url.startswith("unix://"):  # keepalive is a TCP matter
        probes = {name: value for name, value in (("TCP_KEEPIDLE", options.keepalive_idle_s),
                                                  ("TCP_KEEPINTVL", options.keepalive_interval_s),
                                                  ("TCP_KEEPCNT", KEEPALIVE_PROBES)) if hasattr(socket, name)}
        kwargs["socket_keepalive"] = True
        kwargs["socket_keepalive_options"] = {getattr(socket, name): value for name, value in probes.items()}
    return kwargs


def redis_client(url: str, options: RedisOptions, connection_class: type | None = None) -> redis.Redis:
    """A (thread-safe, pooled) client for workers and the CLI; ``connection_class`` replaces redis-py's
    own for ``url``'s scheme (the embedded server's restarts it when it finds it gone)."""
    extra = {"connection_class": connection_class} if connection_class else {}
    return redis.Redis.from_url(url, **connection_kwargs(url, options), **extra)


def async_redis_client(url: str, options: RedisOptions, connection_class: type | None = None) -> aioredis.Redis:
    """An asyncio client for adapters (through :class:`jobs.client.JobClient`)."""
    extra: dict[str, Any] = {"connection_class": connection_class} if connection_class else {}
    return aioredis.Redis.from_url(url, **connection_kwargs(url, options), **extra)
