"""The embedded Redis: started on demand by whichever process needs it first, outliving it, shared by
every later one, one server per data directory, stopped only on purpose.

Real processes and a real redis-server; every wait polls a condition against a deadline. The
``state_dir`` fixture stops the server a test started, so no detached redis-server outlives the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from phobos.redis_server import EmbeddedRedis
from tests.conftest import ROOT

SAMPLE = ROOT / "phobos" / "samples" / "phobos-handbook.pdf"
SCOPE = "console:race:a"
QUESTION = "What happens when a worker dies while it holds a job?"
DEADLINE_S = 180.0


def wait_for(what: str, condition: Callable[[], object], deadline_s: float = DEADLINE_S) -> object:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def servers_on(embedded: EmbeddedRedis) -> list[int]:
    """Pids of the live (not zombie) redis-server processes serving this state dir's socket."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "redis-server" in command and str(embedded.socket_path) in command and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir for the embedded Redis; whatever server the test left on it is stopped afterwards."""
    state = tmp_path / "state"
    state.mkdir()
    yield state
    embedded = EmbeddedRedis(state)
    embedded.stop()
    assert not servers_on(embedded)


def embedded_env(state: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PHOBOS_STATE_DIR": str(state), "PHOBOS_LOG_LEVEL": "INFO",
           "PHOBOS_WORKER_MODELS": "extractive", "PHOBOS_DEFAULT_MODEL": "extractive"}
    env.pop("REDIS_URL", None)
    return {**env, **extra}


def phobos(state: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "phobos", *args], env=embedded_env(state, **env), cwd=ROOT,
                          capture_output=True, text=True, timeout=DEADLINE_S)


def start(state: Path, log: Path, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "phobos", *args], env=embedded_env(state), cwd=ROOT,
                            stdin=stdin, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def live_worker_pids(embedded: EmbeddedRedis) -> set[int]:
    from jobs.heartbeats import live_workers

    try:
        return {w.pid for w in live_workers(redis.Redis.from_url(embedded.url))}
    except (redis.ConnectionError, OSError):
        return set()


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def answer(state: Path) -> dict[str, object]:
    asked = phobos(state, "ask", QUESTION, "--scope", SCOPE, "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    return dict(json.loads(asked.stdout))


def test_data_survives_a_restart(state_dir: Path) -> None:
    first = EmbeddedRedis(state_dir)
    assert first.ensure_running()
    redis.Redis.from_url(first.url).set("phobos:test", "kept")
    assert first.stop() is not None
    assert not first.is_running() and not first.is_alive()

    second = EmbeddedRedis(state_dir)
    assert second.ensure_running()
    assert redis.Redis.from_url(second.url).get("phobos:test") == b"kept"


def test_a_second_process_reuses_the_running_server(state_dir: Path) -> None:
    owner = EmbeddedRedis(state_dir)
    assert owner.ensure_running()
    other = EmbeddedRedis(state_dir)
    assert other.ensure_running() is False  # found, not started
    assert other.url == owner.url
    info = owner.info()
    assert info is not None and other.info() is not None
    assert servers_on(owner) == [info.pid]


def test_deep_state_dirs_get_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(deep)
    assert len(str(server.socket_path)) <= 100


def test_a_stale_socket_and_pid_file_from_a_killed_server_are_taken_over(state_dir: Path) -> None:
    embedded = EmbeddedRedis(state_dir)
    embedded.ensure_running()
    redis.Redis.from_url(embedded.url).set("phobos:test", "kept")
    dead = embedded.info()
    assert dead is not None
    os.kill(dead.pid, signal.SIGKILL)
    wait_for("the server's lock to go with it", lambda: not embedded.is_alive())
    assert embedded.socket_path.exists() and embedded.pid_path.exists()  # what a killed server leaves

    assert EmbeddedRedis(state_dir).ensure_running()
    info = embedded.info()
    assert info is not None and info.pid != dead.pid
    assert servers_on(embedded) == [info.pid]


RACER = """
import sys
from pathlib import Path
from phobos.redis_server import EmbeddedRedis
sys.stdin.readline()  # the starting gun: every racer is loaded and waiting
print(EmbeddedRedis(Path(sys.argv[1])).ensure_running(), flush=True)
"""


def test_processes_racing_to_start_it_make_exactly_one_server(state_dir: Path) -> None:
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(state_dir)], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
              for _ in range(4)]
    for racer in racers:  # all are started before any is told to go
        assert racer.stdin is not None
    for racer in racers:
        racer.stdin.write("go\n")  # type: ignore[union-attr]
        racer.stdin.flush()  # type: ignore[union-attr]
    started = [racer.communicate(timeout=DEADLINE_S)[0].strip() for racer in racers]
    assert sorted(started) == ["False", "False", "False", "True"]
    embedded = EmbeddedRedis(state_dir)
    info = embedded.info()
    assert info is not None
    assert servers_on(embedded) == [info.pid]


def test_the_issue_sequence_ingest_then_worker_then_ingest_exits_and_a_question_is_answered(
        state_dir: Path, tmp_path: Path) -> None:
    embedded = EmbeddedRedis(state_dir)
    ingest = start(state_dir, tmp_path / "ingest.log", "ingest", str(SAMPLE), "--scope", SCOPE)
    worker = None
    try:
        wait_for("the ingest to start the embedded Redis", embedded.is_running)
        first = embedded.info()
        assert first is not None
        worker = start(state_dir, tmp_path / "worker.log", "worker", "--models", "extractive")
        assert ingest.wait(timeout=DEADLINE_S) == 0, (tmp_path / "ingest.log").read_text()
        wait_for("the worker", lambda: worker.pid in live_worker_pids(embedded))

        reply = answer(state_dir)
        assert reply["type"] == "final" and reply["citations"], reply
        status = phobos(state_dir, "status")
        assert status.returncode == 0, status.stderr
        assert "Workers live: 1" in status.stdout
        assert f"Redis: embedded, pid {first.pid}, up " in status.stdout  # the ingest's server, still up
        assert servers_on(embedded) == [first.pid]
    finally:
        stop(ingest, *([worker] if worker else []))


def read_until(stream: IO[bytes], marker: bytes, seen: list[bytes]) -> None:
    """Lines from ``stream`` until one holds ``marker`` (the test's timeout bounds a silent child)."""
    for line in iter(stream.readline, b""):
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(b"".join(seen).decode(errors="replace")[-3000:])


def keep_reading(stream: IO[bytes], seen: list[bytes]) -> threading.Thread:
    """Read the rest of ``stream`` into ``seen`` on a thread: a pipe nobody reads fills (64 KiB) and then
    blocks every child writing to it, so a worker logging its shutdown would hang until it is killed."""
    reader = threading.Thread(target=lambda: seen.extend(iter(stream.readline, b"")), daemon=True)
    reader.start()
    return reader


def test_sigkill_of_the_process_that_started_redis_leaves_the_worker_and_adapter_serving(
        state_dir: Path, tmp_path: Path) -> None:
    embedded = EmbeddedRedis(state_dir)
    starter = start(state_dir, tmp_path / "starter.log", "console", stdin=subprocess.PIPE)
    worker = adapter = None
    try:
        wait_for("the first console to start the embedded Redis", embedded.is_running)
        first = embedded.info()
        assert first is not None
        assert phobos(state_dir, "ingest", str(SAMPLE)).returncode == 0
        worker = start(state_dir, tmp_path / "worker.log", "worker", "--models", "extractive")
        wait_for("the worker", lambda: worker.pid in live_worker_pids(embedded))
        adapter = subprocess.Popen([sys.executable, "-m", "phobos", "console"], env=embedded_env(state_dir),
                                   cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        assert adapter.stdin is not None and adapter.stdout is not None
        seen: list[bytes] = []
        adapter.stdin.write(b"/status\n")
        adapter.stdin.flush()
        read_until(adapter.stdout, b"worker(s) live", seen)  # the adapter is in business

        starter.kill()
        starter.wait(timeout=30)

        adapter.stdin.write(f"{QUESTION}\n".encode())
        adapter.stdin.close()
        read_until(adapter.stdout, b"phobos-handbook.pdf", seen)  # answered, with its source
        assert adapter.wait(timeout=DEADLINE_S) == 0
        assert embedded.info() is not None and servers_on(embedded) == [first.pid]
        assert worker.poll() is None
    finally:
        stop(*[p for p in (starter, worker, adapter) if p is not None])


def test_a_server_killed_under_a_running_worker_is_started_again_by_it(state_dir: Path, tmp_path: Path) -> None:
    embedded = EmbeddedRedis(state_dir)
    embedded.ensure_running()
    # Every write on disk before its reply, so what the kill keeps does not depend on the fsync second.
    redis.Redis.from_url(embedded.url).config_set("appendfsync", "always")
    assert phobos(state_dir, "ingest", str(SAMPLE), "--scope", SCOPE).returncode == 0
    first = embedded.info()
    assert first is not None
    worker = start(state_dir, tmp_path / "worker.log", "worker", "--models", "extractive")
    try:
        wait_for("the worker", lambda: worker.pid in live_worker_pids(embedded))
        os.kill(first.pid, signal.SIGKILL)
        # Nobody but the worker is there to notice; the test only looks (info() starts nothing).
        revived = wait_for("the worker to start Redis again",
                           lambda: (i := embedded.info()) is not None and i.pid != first.pid and i)
        assert servers_on(embedded) == [revived.pid]  # type: ignore[attr-defined]
        wait_for("the worker's heartbeat on the new server", lambda: worker.pid in live_worker_pids(embedded))
        reply = answer(state_dir)
        assert reply["type"] == "final" and reply["citations"], reply
    finally:
        stop(worker)


def test_redis_stop_is_kept_by_running_processes_and_undone_by_the_next_command(
        state_dir: Path, tmp_path: Path) -> None:
    embedded = EmbeddedRedis(state_dir)
    worker = start(state_dir, tmp_path / "worker.log", "worker", "--models", "extractive")
    try:
        wait_for("the worker", lambda: embedded.is_running() and worker.pid in live_worker_pids(embedded))
        stopped = phobos(state_dir, "redis", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith("Stopped the embedded Redis (pid ")
        assert "connection(s) were still open" in stopped.stdout  # the worker's
        log = tmp_path / "worker.log"
        # The worker tries again and again, and each time leaves the server stopped.
        wait_for("two reconnect attempts", lambda: log.read_text().count("Redis is unreachable") >= 2)
        assert not embedded.is_alive() and not servers_on(embedded)
        status = phobos(state_dir, "status")
        assert status.returncode == 0 and "Redis: embedded, not running" in status.stdout

        assert phobos(state_dir, "dlq", "list").returncode == 0  # any command that needs Redis starts it
        wait_for("the worker back on the restarted server", lambda: worker.pid in live_worker_pids(embedded))
    finally:
        stop(worker)
    assert worker.returncode == 0


def test_make_run_ingest_then_up_is_ready_and_answers_and_redis_outlives_it(state_dir: Path) -> None:
    assert phobos(state_dir, "ingest", str(SAMPLE)).returncode == 0
    up = subprocess.run([sys.executable, "-m", "phobos", "up"], input=f"{QUESTION}\n".encode(),
                        env=embedded_env(state_dir), cwd=ROOT, capture_output=True, timeout=300)
    chat = up.stdout.decode() + up.stderr.decode()
    assert up.returncode == 0, chat
    assert "Phobos is ready in " in chat and "(Redis: embedded)" in chat
    assert "phobos-handbook.pdf" in up.stdout.decode()
    assert EmbeddedRedis(state_dir).is_running()  # for the next command; `phobos redis stop` ends it


def test_redis_stop_with_nothing_running_and_with_redis_url_set(state_dir: Path) -> None:
    idle = phobos(state_dir, "redis", "stop")
    assert idle.returncode == 0 and idle.stdout.startswith("The embedded Redis is not running")
    external = phobos(state_dir, "redis", "stop", REDIS_URL="redis://127.0.0.1:1/0")
    assert external.returncode == 2 and "REDIS_URL is set" in external.stderr
    assert "Traceback" not in idle.stderr + external.stderr


def test_a_client_that_finds_the_server_gone_starts_it_again_unless_it_was_stopped(state_dir: Path) -> None:
    import asyncio

    from phobos import runtime
    from phobos.settings import Settings

    settings = Settings(state_dir=state_dir, redis_url="")
    embedded = EmbeddedRedis(state_dir)
    embedded.ensure_running()
    sync_client = runtime.connect(embedded.url, settings)
    for round_ in ("sync", "asyncio"):
        first = embedded.info()
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        wait_for("the killed server's lock to go", lambda: not embedded.is_alive())
        if round_ == "sync":
            assert sync_client.ping()
        else:
            async def ping() -> bool:
                client = runtime.connect_async(embedded.url, settings)
                try:
                    return bool(await client.ping())
                finally:
                    await client.aclose()

            assert asyncio.run(ping())
        revived = embedded.info()
        assert revived is not None and revived.pid != first.pid
        assert servers_on(embedded) == [revived.pid]

    embedded.stop()
    with pytest.raises(redis.ConnectionError):
        sync_client.ping()  # stopped on purpose: a running process waits for it
    assert not embedded.is_alive()


def test_a_server_that_holds_no_lock_is_used_not_doubled(state_dir: Path) -> None:
    """One started by an older Phobos (it stopped its server on exit and took no server lock)."""
    from phobos.redis_server import redis_server_binary

    embedded = EmbeddedRedis(state_dir)
    older = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(embedded.socket_path),
                              "--dir", str(embedded.data_dir), "--appendonly", "yes", "--save", ""],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the older server", embedded.is_running)
        assert embedded.ensure_running() is False
        assert servers_on(embedded) == [older.pid]
    finally:
        older.terminate()
        older.wait(timeout=30)
