"""`phobos up` supervises its children: one that dies is started again with backoff, its failure is
shown where the operator looks, and each child's state reaches `phobos status` and the chat `/status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import pytest
import redis
from pydantic import SecretStr

from jobs import supervised
from phobos.redis_server import EmbeddedRedis
from phobos.settings import Settings
from phobos.supervisor import RESTART_BACKOFF_S, STABLE_AFTER_S, Child, Supervisor, exit_summary
from tests.conftest import ROOT, RedisServer
from tests.test_embedded_redis import (
    embedded_env,
    keep_reading,
    live_worker_pids,
    phobos,
    read_until,
    state_dir,
    wait_for,
)

__all__ = ["state_dir"]  # the fixture, shared with test_embedded_redis


def dies_at_once(supervisor: Supervisor) -> Child:
    """A real child that exits with code 2 at start (`phobos no-such-command`: argparse refuses it)."""
    child = supervisor.start_child("no-such-command", 1)
    assert child.process is not None
    child.process.wait(timeout=60)
    return child


def test_a_child_that_keeps_dying_is_restarted_with_growing_backoff_and_its_failure_shown(
        redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(redis_url=SecretStr(redis_server.url), state_dir=tmp_path / "state")
    supervisor = Supervisor(settings, redis_server.url, tmp_path / "logs", redis_client)
    child = dies_at_once(supervisor)
    now = time.monotonic()  # the supervisor is driven by hand: synthetic clock, real processes
    waits = []
    for _ in range(len(RESTART_BACKOFF_S) + 1):
        supervisor.check(now)  # notes the death
        assert child.restart_at is not None
        waits.append(round(child.restart_at - now))
        [state] = supervised.current(redis_client)
        assert state.state == "restarting" and state.last_failure.startswith("exit code 2: ")
        supervisor.check(child.restart_at - 0.1)
        assert child.restart_at is not None  # not yet
        now = child.restart_at
        supervisor.check(now)  # starts it again
        assert child.restart_at is None
        assert child.process is not None
        child.process.wait(timeout=60)
    assert waits == [*RESTART_BACKOFF_S, RESTART_BACKOFF_S[-1]]
    assert child.restarts == len(RESTART_BACKOFF_S) + 1

    child.started_at = now - STABLE_AFTER_S  # this time it had run long enough: backoff starts over
    supervisor.check(now)
    assert child.restart_at == now + RESTART_BACKOFF_S[0]

    shown = capsys.readouterr().err
    assert "The no-such-command adapter stopped (exit code 2: " in shown
    assert "invalid choice: 'no-such-command'" in shown  # the last line of its log says why
    assert f"starting it again in {RESTART_BACKOFF_S[1]:.0f} s." in shown
    assert "started again (restart 1)." in shown
    supervisor.stop()
    assert supervised.current(redis_client) == []


def test_exit_summary_names_the_signal_and_the_last_log_line(tmp_path: Path) -> None:
    log = tmp_path / "discord.log"
    log.write_text("Traceback (most recent call last):\n  ...\nsocket.gaierror: [Errno -3] Temporary failure\n\n")
    assert exit_summary(1, log) == "exit code 1: socket.gaierror: [Errno -3] Temporary failure"
    assert exit_summary(-signal.SIGKILL, None) == "killed by SIGKILL"
    assert exit_summary(1, tmp_path / "never-written.log") == "exit code 1"


def test_up_restarts_a_killed_worker_and_a_failing_adapter_and_status_shows_them(
        state_dir: Path, tmp_path: Path) -> None:
    # A Discord adapter whose API does not answer dies at login, as one did on a DNS error.
    env = embedded_env(state_dir, PHOBOS_LAZY_EMBEDDER="true", DISCORD_TOKEN="not-a-token",
                       PHOBOS_DISCORD_API_URL="http://127.0.0.1:1/api",
                       PHOBOS_DISCORD_GATEWAY_URL="ws://127.0.0.1:1/gateway")
    up = subprocess.Popen([sys.executable, "-m", "phobos", "up", "--no-console"], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(600, up.kill)  # a hung start fails the test below rather than the suite
    watchdog.start()
    embedded = EmbeddedRedis(state_dir)
    seen: list[bytes] = []
    second: set[int] = set()
    try:
        assert up.stderr is not None
        read_until(up.stderr, b"Phobos is ready", seen)
        read_until(up.stderr, b"The discord adapter stopped (exit code 1)", seen)
        assert b"Cannot connect to host 127.0.0.1:1" in b"".join(seen)  # its own output, on up's stderr
        read_until(up.stderr, b"The discord adapter started again (restart 1).", seen)

        [first] = live_worker_pids(embedded)
        os.kill(first, signal.SIGKILL)
        read_until(up.stderr, b"The worker stopped (killed by SIGKILL); starting it again in 1 s.", seen)
        reader = keep_reading(up.stderr, seen)  # the restarting adapter's tracebacks must not fill the pipe
        second = cast(set[int], wait_for("a new worker", lambda: live_worker_pids(embedded) - {first}))

        status = phobos(state_dir, "status")
        assert status.returncode == 0, status.stderr
        assert "Run by `phobos up`:" in status.stdout
        assert "discord adapter (" in status.stdout and "restart(s)" in status.stdout, status.stdout
        assert "worker (" in status.stdout and "killed by SIGKILL" in status.stdout, status.stdout

        chat = subprocess.run([sys.executable, "-m", "phobos", "console"], input=b"/status\n", env=env,
                              cwd=ROOT, capture_output=True, timeout=300)
        assert b"- discord adapter (" in chat.stdout, chat.stdout + chat.stderr
    finally:
        up.terminate()
        up.wait(timeout=120)
        watchdog.cancel()
    reader.join(timeout=60)  # the pipe ends when up and its children have exited
    assert up.returncode == 0, b"".join(seen).decode(errors="replace")[-3000:]
    assert not live_worker_pids(embedded) & second  # its worker stopped with it
    # ... once, gracefully: the restarted worker (started by the supervisor's thread) got one stop signal.
    after_restart = b"".join(seen).split(b"The worker started again (restart 1).")[-1].decode(errors="replace")
    assert after_restart.count("stopping: taking no more jobs") == 1, after_restart[-3000:]
    assert "a second stop signal" not in after_restart, after_restart[-3000:]
    assert "stopped after" in after_restart, after_restart[-3000:]
