"""Without Redis: the CLI says so in one sentence and exits non-zero, and a worker stops within its grace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, phobos_env

GONE = {"refused": "redis://127.0.0.1:1/0", "no socket": "unix:///nonexistent/phobos/redis.sock"}
GRACE_S = 30.0


@pytest.mark.parametrize("url", GONE.values(), ids=GONE.keys())
@pytest.mark.parametrize("command", [["status"], ["models"], ["console"], ["ask", "anything"], ["dlq", "list"],
                                     ["up"]], ids=" ".join)
def test_a_command_without_redis_says_so_in_one_sentence(command: list[str], url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "phobos", *command], env=phobos_env(url), cwd=ROOT,
                          input="/status\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [sentence] = done.stderr.strip().splitlines()
    assert sentence.startswith("Redis at ") and "does not answer" in sentence and "REDIS_URL" in sentence


def test_a_worker_without_redis_stops_within_its_grace_and_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "phobos", "worker", "--models", "extractive"],
                              env=phobos_env(GONE["no socket"], PHOBOS_LAZY_EMBEDDER="true",
                                             PHOBOS_SHUTDOWN_GRACE_S=str(GRACE_S)),
                              cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Redis is unreachable" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        # Within the grace, and by the front door: exit code 0, not the stuck-worker exit after it.
        assert worker.wait(timeout=GRACE_S) == 0, log.read_text()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "stopped before Redis answered" in log.read_text()
