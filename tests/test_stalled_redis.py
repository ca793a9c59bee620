"""A network path to Redis that goes silent (half-open connections) does not hang a worker or an
adapter: their reads time out, they reconnect, and jobs flow again once the path carries bytes.

Real parts: a redis-server on TCP, a `phobos worker` process and a JobClient, both connected through
a proxy (tests/stall_proxy.py) that can silence its connections without closing them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from core.scope import Scope
from jobs.client import JobClient
from jobs.connection import RedisOptions, async_redis_client
from jobs.heartbeats import live_workers
from jobs.protocol import Job, JobKind, ReplyEvent
from phobos.redis_server import redis_server_binary
from tests.conftest import ROOT, phobos_env
from tests.stall_proxy import StallingProxy

SOCKET_TIMEOUT_S = 2.0  # short, so the test sees the timeouts fire; the default is 10 s
HEALTH_CHECK_S = 1  # a pooled connection idle this long is PINGed (and replaced if silent) before use
WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[tuple[int, redis.Redis]]:
    port = free_port()
    server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield port, client
    client.close()
    server.terminate()
    server.wait(timeout=10)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


async def await_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_a_worker_and_an_adapter_recover_from_a_silent_connection(tcp_redis, tmp_path, caplog) -> None:
    port, direct = tcp_redis
    proxy = StallingProxy(("127.0.0.1", port))
    models = tmp_path / "models.toml"
    models.write_text('[models.stall-echo]\nbackend = "echo"\n')
    log_path = tmp_path / "worker.log"
    env = phobos_env(proxy.url, PHOBOS_MODELS_FILE=str(models), PHOBOS_DEFAULT_MODEL="stall-echo",
                     PHOBOS_LAZY_EMBEDDER="true", PHOBOS_REDIS_SOCKET_TIMEOUT_S=str(SOCKET_TIMEOUT_S),
                     PHOBOS_REDIS_CONNECT_TIMEOUT_S=str(SOCKET_TIMEOUT_S),
                     PHOBOS_REDIS_HEALTH_CHECK_INTERVAL_S=str(HEALTH_CHECK_S))
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "phobos", "worker", "--models", "stall-echo"], env=env,
                                  cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    caplog.set_level(logging.WARNING, logger="jobs.client")
    try:
        wait_for(lambda: worker.poll() is not None or bool(live_workers(direct)),
                 "the worker to start")
        assert worker.poll() is None, log_path.read_text()[-3000:]

        async def scenario() -> None:
            client = async_redis_client(proxy.url, RedisOptions(socket_timeout_s=SOCKET_TIMEOUT_S,
                                                                connect_timeout_s=SOCKET_TIMEOUT_S,
                                                                health_check_interval_s=HEALTH_CHECK_S))
            jobs = JobClient(client, "stall-adapter")
            await jobs.start_listening()
            finals: dict[str, ReplyEvent] = {}

            async def listen() -> None:
                async for event in jobs.replies(block_ms=500):
                    if event.is_terminal:
                        finals[event.job_id] = event

            listening = asyncio.create_task(listen())

            def ask(job_id: str) -> Job:
                return Job(id=job_id, kind=JobKind.ASK, scope=Scope("console", "stall", "c"), user="u",
                           reply_to=jobs.reply_stream, text=f"echo {job_id}")

            try:
                assert (await jobs.submit(ask("before"))).is_queued
                await await_for(lambda: "before" in finals, "an answer before the stall")

                proxy.stall()  # every connection open now goes silent, and stays so
                await await_for(lambda: "Redis is unreachable" in log_path.read_text(errors="replace"),
                                "the worker's read to time out")
                await await_for(lambda: any("reply stream read failed" in r.getMessage() for r in caplog.records),
                                "the adapter's read to time out")
                assert len(proxy.swallowed_connections) >= 2  # the worker's and the adapter's reads were lost

                proxy.resume()  # new connections forward again; the silenced ones never will
                # A pooled connection silenced moments ago may still fail one command (after the socket
                # timeout, which drops it); the adapter tells its user, and the next submit reconnects.
                deadline = time.monotonic() + WAIT_S
                while True:
                    try:
                        assert (await jobs.submit(ask("after"))).is_queued
                        break
                    except (redis.ConnectionError, redis.TimeoutError):
                        assert time.monotonic() < deadline, "the adapter never reconnected"
                await await_for(lambda: "after" in finals, "an answer after the stall")
                assert "echo after" in finals["after"].text
            finally:
                listening.cancel()
                await client.aclose()

        asyncio.run(scenario())
        assert worker.poll() is None  # the worker rode it out
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        proxy.close()
