"""Fixtures that start real parts: a redis-server, the real embedder, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from phobos.redis_server import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
WORKER_START_TIMEOUT_S = 120.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class RedisServer:
    """A real redis-server on a unix socket in a temp dir, with append-only persistence."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.directory),
             "--appendonly", "yes", "--save", "", "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except (redis.ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on a freshly flushed server."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real default embedder (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    from phobos.runtime import load_embedder
    from phobos.settings import Settings

    return load_embedder(Settings())


def phobos_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PHOBOS_LOG_LEVEL": "INFO", **extra}
    env.pop("PHOBOS_STATE_DIR", None)
    return env


class WorkerProcess:
    """`phobos worker` as a real child process."""

    def __init__(self, redis_url: str, models: str, log_path: Path, **env: str):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "phobos", "worker", "--models", models],
                                        env=phobos_env(redis_url, **env), stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, client: redis.Redis) -> None:
        from jobs.heartbeats import live_workers

        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if any(w.pid == self.process.pid for w in live_workers(client)):
                return
            time.sleep(0.1)
        raise RuntimeError("worker did not become ready")

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


@pytest.fixture
def start_worker(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start real worker processes: ``start_worker(models="extractive")``; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(models: str = "extractive", **env: str) -> WorkerProcess:
        worker = WorkerProcess(redis_server.url, models, tmp_path / f"worker-{len(started)}.log", **env)
        started.append(worker)
        worker.wait_ready(redis_client)
        return worker

    yield start
    for worker in started:
        worker.stop()
