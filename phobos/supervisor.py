"""`phobos up`: a worker and the configured chat adapters as child processes, kept running, and the
console in this process; Redis is REDIS_URL's or the embedded one (:mod:`phobos.redis_server`).

The supervisor's promise: a child that dies is started again and nobody has to look at a log to
know. The first restart comes after ``RESTART_BACKOFF_S[0]``; each further failure in a row waits
the next step (the last repeats), and a child that ran for ``STABLE_AFTER_S`` starts over from the
first. So a Discord adapter that cannot resolve its gateway is tried every 30 s at most, not in a
tight loop, and a worker killed once is back within a second. Each death is printed on stderr (the
terminal the console runs in) with the exit code and the last line of the child's log, and each
child's state is published to Redis (:mod:`jobs.supervised`) for `/status` and `phobos status`.
The one exception: a worker that exits before it was ever ready (its models do not load) is not
restarted; `phobos up` shows the end of its log and exits, since it would fail the same way again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import redis

from jobs import supervised
from jobs.heartbeats import live_workers
from jobs.supervised import ChildState
from phobos import runtime
from phobos.adapters import configured_adapters
from phobos.child_env import environment_for
from phobos.settings import Settings
from telemetry import logs

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits after consecutive failures; the last repeats
STABLE_AFTER_S = 60.0  # a child that ran this long before dying is restarted after the first step again
CHECK_EVERY_S = 0.2  # how soon a death is noticed
PUBLISH_EVERY_S = 5.0  # states are rewritten this often (readers drop them after jobs.supervised.STALE_AFTER_S)
WORKER_READY_TIMEOUT_S = 300.0
CHILD_STOP_TIMEOUT_S = 45.0  # a worker may take PHOBOS_SHUTDOWN_GRACE_S (30 s) to finish what it holds
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)

Console = Callable[[str, Settings], Coroutine[Any, Any, None]]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Child:
    """One supervised `phobos COMMAND` process and its history."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path | None):
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log" if log_dir is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.restart_at: float | None = None

    @property
    def title(self) -> str:
        return "The worker" if self.name == "worker" else f"The {self.name} adapter"

    def start(self) -> None:
        output = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "phobos", self.name], env=self.env,
                                            stdout=output, stderr=subprocess.STDOUT if output else None,
                                            preexec_fn=_die_with_parent)
        finally:
            if output is not None:
                output.close()  # the child holds its own copy
        self.started_at = time.monotonic()
        self.restart_at = None

    def has_exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def note_exit(self, now: float) -> float:
        """Record how it died and when it starts again; the wait in seconds."""
        assert self.process is not None
        self.failures_in_a_row = 1 if now - self.started_at >= STABLE_AFTER_S else self.failures_in_a_row + 1
        self.last_failure = exit_summary(self.process.returncode, self.log_path)
        wait_s = RESTART_BACKOFF_S[min(self.failures_in_a_row, len(RESTART_BACKOFF_S)) - 1]
        self.restart_at = now + wait_s
        return wait_s

    def state(self, host: str, stopped: bool) -> ChildState:
        if stopped:
            what = "stopped"
        elif self.restart_at is not None:
            what = "restarting"
        else:
            what = "running"
        pid = self.process.pid if self.process is not None and self.process.poll() is None else None
        return ChildState(self.name, host, os.getpid(), what, pid, self.restarts, self.last_failure, time.time())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def exit_summary(returncode: int, log_path: Path | None) -> str:
    """``exit code 1: socket.gaierror: ...`` or ``killed by SIGKILL``: how a child died, in one line."""
    how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    last = last_log_line(log_path) if log_path is not None else ""
    return f"{how}: {last}" if last else how


def last_log_line(path: Path, max_chars: int = 300) -> str:
    with contextlib.suppress(OSError):
        with path.open("rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 8192))
            lines = [line for line in log_file.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip()[:max_chars] if lines else ""
    return ""


class Supervisor:
    """Starts children, restarts the ones that die (on a thread of its own), stops them all at the end."""

    def __init__(self, settings: Settings, url: str, log_dir: Path | None, client: redis.Redis):
        self.settings = settings
        self.url = url
        self.log_dir = log_dir
        self.client = client
        self.host = socket.gethostname()
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._last_publish = 0.0

    def start_child(self, name: str, port_offset: int) -> Child:
        child = Child(name, child_env(name, self.settings, self.url, port_offset), self.log_dir)
        child.start()
        with self._lock:
            self.children.append(child)
        return child

    def watch(self) -> None:
        """From now on, restart children that die."""
        self._thread.start()

    def _watch(self) -> None:
        try:
            while not self._stopping.wait(CHECK_EVERY_S):
                try:
                    self.check(time.monotonic())
                except Exception as exc:  # a bad round must not end the thread: see below why it must live
                    say(f"The supervisor could not check its children ({type(exc).__name__}: {exc}).")
        finally:
            # PR_SET_PDEATHSIG fires when the *thread* that started a child ends, not the process. The
            # children this thread restarted would get SIGTERM as it returns and a second one from stop(),
            # and a worker takes a second signal as "hand back now, skip the grace time". So this thread
            # stops them itself, once each, before it ends.
            self._stop_children()

    def check(self, now: float) -> None:
        """Note deaths, start children whose backoff is over, publish the states now and then."""
        changed = False
        with self._lock:
            for child in self.children:
                if child.restart_at is None and child.has_exited():
                    wait_s = child.note_exit(now)
                    say(f"{child.title} stopped ({child.last_failure}); starting it again in {wait_s:.0f} s.")
                    changed = True
                elif child.restart_at is not None and now >= child.restart_at and not self._stopping.is_set():
                    child.restarts += 1
                    child.start()
                    say(f"{child.title} started again (restart {child.restarts}).")
                    changed = True
        if changed or now - self._last_publish >= PUBLISH_EVERY_S:
            self._last_publish = now
            self.publish()

    def publish(self, stopped: bool = False) -> None:
        with self._lock:
            states = [child.state(self.host, stopped) for child in self.children]
        with contextlib.suppress(*REDIS_DOWN):  # Redis away: the next round tries again
            (supervised.withdraw if stopped else supervised.publish)(self.client, states)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()  # it stops the children on its way out
        self._stop_children()  # never watched: stop them here (a child stopped already is left alone)
        self.publish(stopped=True)

    def _stop_children(self) -> None:
        with self._lock:
            children = list(reversed(self.children))
        for child in children:
            child.stop()


def child_env(role: str, settings: Settings, url: str, port_offset: int) -> dict[str, str]:
    """A child's environment: its role's secrets only (phobos.child_env), the same Redis, the next metrics port.

    With the embedded Redis the child finds it through the state dir rather than a URL, so that it too
    starts the server again should it find it gone.
    """
    port = settings.telemetry.metrics_port + port_offset if settings.telemetry.metrics_port else 0
    env = environment_for(role, {"PHOBOS_METRICS_PORT": str(port)})
    if runtime.is_embedded(settings):
        env.pop("REDIS_URL", None)
        env["PHOBOS_STATE_DIR"] = str(settings.state_path)
    else:
        env["REDIS_URL"] = url
    return env


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when `phobos up` dies, even by SIGKILL, so no worker is orphaned.
    Linux sends it when the *thread* that started the child ends (prctl(2)): see Supervisor._watch."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_up(settings: Settings, with_console: bool, console: Console) -> int:
    """`phobos up`; ``console`` runs the console adapter against a Redis URL until its input ends."""
    started = time.monotonic()
    # SIGTERM must unwind like Ctrl-C, so the children are stopped below.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # With the console, every process logs to files: log lines in the middle of a conversation are noise.
    log_dir = settings.state_path / "logs" if with_console else None
    if log_dir is not None:
        telemetry = settings.telemetry
        logs.configure(telemetry.log_level or "INFO", telemetry.log_format, telemetry.log_text,
                       path=log_dir / "phobos.log")
    with runtime.redis_url(settings) as url:
        health = runtime.serve_metrics(settings, url)
        client = runtime.connect(url, settings)
        client.ping()  # an unreachable REDIS_URL: one sentence now (cli.main), not a worker retrying for minutes
        supervisor = Supervisor(settings, url, log_dir, client)
        worker = supervisor.start_child("worker", 1)
        try:
            if not _wait_for_worker(client, worker, started):
                return 1
            for offset, platform in enumerate(configured_adapters(settings), start=2):
                say(f"Starting the {platform} adapter.")
                supervisor.start_child(platform, offset)
            supervisor.watch()
            if health:
                health.mark_loaded()
            say(f"Phobos is ready in {time.monotonic() - started:.1f} s (Redis: {redis_description(settings, url)}).")
            if log_dir is not None:
                say(f"Logs: {log_dir}")
            if not with_console:
                with contextlib.suppress(KeyboardInterrupt):  # SIGTERM or Ctrl-C: the normal way to end
                    threading.Event().wait()
                return 0
            asyncio.run(console(url, settings))
            return 0
        finally:
            supervisor.stop()


def redis_description(settings: Settings, url: str) -> str:
    return "embedded" if runtime.is_embedded(settings) else runtime.masked_url(url)


def _wait_for_worker(client: redis.Redis, worker: Child, started: float) -> bool:
    say("Starting a worker and loading models...")
    assert worker.process is not None
    while time.monotonic() - started < WORKER_READY_TIMEOUT_S:
        if worker.process.poll() is not None:
            where = "see the log above"
            if worker.log_path is not None:
                tail = worker.log_path.read_text(errors="replace").splitlines()[-20:]
                where = f"the end of {worker.log_path}:\n" + "\n".join(tail)
            say(f"The worker exited during start-up (code {worker.process.returncode}); {where}")
            return False
        with contextlib.suppress(*REDIS_DOWN):
            if any(w.pid == worker.process.pid for w in live_workers(client)):
                return True
        time.sleep(CHECK_EVERY_S)
    say("The worker did not become ready in time.")
    return False
