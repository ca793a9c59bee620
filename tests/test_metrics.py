"""Metrics, health probes and structured logs, scraped from real processes over HTTP.

A real worker (`phobos worker`) and a real adapter (`phobos console`) share a real Redis; the test
drives questions, an ingest, a rate-limit refusal and a dead letter through them, then parses both
/metrics pages with prometheus-client's own parser and checks the counts.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.scope import Scope
from jobs import keys
from jobs.protocol import Job, JobKind
from telemetry import logs
from telemetry.server import Health
from tests.conftest import ROOT, RedisServer, WorkerProcess, phobos_env
from tests.pdfs import FACT_PAGES, pdf_with_pages

T = TypeVar("T")
DEADLINE_S = 240.0
USER = "metrics-test-user"
SCOPE = "console:local:console"
QUESTIONS = ["What colour is the crater lake of Mount Kessler?", "When is the Skerry Point lamp cleaned?"]
REFUSED_QUESTION = "How many hives are on the north meadow?"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str] | None:
    """(status, body), or None while nothing listens on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(port: int) -> tuple[str, Samples]:
    reply = get(port, "/metrics")
    assert reply is not None and reply[0] == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(reply[1]):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return reply[1], samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_readyz_is_503_until_redis_answers(tmp_path: Path) -> None:
    late_redis = RedisServer(tmp_path / "redis")
    late_redis.directory.mkdir()
    port = free_port()
    worker = WorkerProcess(late_redis.url, "extractive", tmp_path / "worker.log", PHOBOS_METRICS_PORT=str(port),
                           PHOBOS_DEFAULT_MODEL="extractive")
    try:
        first = wait_for("the metrics port", lambda: get(port, "/readyz"))
        assert first[0] == 503 and "redis unreachable" in first[1]
        assert get(port, "/healthz") == (200, "ok\n")  # alive, just not ready
        late_redis.start()
        ready = wait_for("/readyz 200", lambda: (r := get(port, "/readyz")) and r[0] == 200 and r)
        assert ready == (200, "ready\n")
    finally:
        worker.stop()
        late_redis.stop()


def test_health_is_not_ready_until_loaded(redis_server: RedisServer, redis_client) -> None:  # type: ignore[no-untyped-def]
    health = Health(redis_client)
    assert health.problems() == ["models loading"]
    health.mark_loaded()
    assert health.problems() == []


def test_metrics_after_questions_ingest_refusal_and_dead_letter(redis_server: RedisServer, redis_client,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    worker_port, adapter_port = free_port(), free_port()
    worker = WorkerProcess(redis_server.url, "extractive", tmp_path / "worker.log",
                           PHOBOS_METRICS_PORT=str(worker_port), PHOBOS_DEFAULT_MODEL="extractive",
                           PHOBOS_MAX_DELIVERIES="1", PHOBOS_RECLAIM_IDLE_S="1", PHOBOS_LOG_FORMAT="json")
    pdf = tmp_path / "facts.pdf"
    pdf.write_bytes(pdf_with_pages(FACT_PAGES))
    # The console adapter as its own process; three jobs use up the user's burst, the fourth is refused.
    env = phobos_env(redis_server.url, PHOBOS_METRICS_PORT=str(adapter_port), USER=USER, PHOBOS_RATE_BURST="3",
                     PHOBOS_RATE_PER_MIN="0.001")
    console = subprocess.Popen([sys.executable, "-m", "phobos", "console"], env=env, cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=(tmp_path / "console.out").open("wb"),
                               stderr=subprocess.STDOUT)
    try:
        worker.wait_ready(redis_client)
        wait_for("the worker's /readyz", lambda: (r := get(worker_port, "/readyz")) and r[0] == 200)
        wait_for("the adapter's /readyz", lambda: (r := get(adapter_port, "/readyz")) and r[0] == 200)
        assert console.stdin is not None
        console.stdin.write("\n".join([f"/upload {pdf}", *QUESTIONS, REFUSED_QUESTION, ""]).encode())
        console.stdin.flush()
        dead_letter_a_job_whose_worker_died(redis_client)

        def worker_done() -> Samples | None:
            _, samples = scrape(worker_port)
            return samples if sum(v for (n, _), v in samples.items() if n == "phobos_jobs_total") >= 4 else None

        def adapter_done() -> Samples | None:
            _, samples = scrape(adapter_port)
            total = sum(v for (n, _), v in samples.items() if n == "phobos_jobs_submitted_total")
            return samples if total >= 4 else None

        wait_for("the worker's four jobs", worker_done)
        wait_for("the adapter's four submissions", adapter_done)
        worker_text, w = scrape(worker_port)
        adapter_text, a = scrape(adapter_port)
    finally:
        if console.stdin is not None:
            console.stdin.close()
        console.wait(timeout=60)
        worker.stop()

    (tmp_path / "worker-metrics.txt").write_text(worker_text)  # a sample for the curious: pytest --basetemp
    assert value(w, "phobos_jobs_total", kind="ingest", outcome="ok") == 1
    assert value(w, "phobos_jobs_total", kind="ask", outcome="ok") == 2
    assert value(w, "phobos_jobs_total", kind="ask", outcome="dead_letter") == 1
    assert value(w, "phobos_dead_letters_total") == 1
    assert value(w, "phobos_ingest_pages_total") == len(FACT_PAGES)
    assert value(w, "phobos_ingest_seconds_count") == 1
    assert value(w, "phobos_job_queue_wait_seconds_count", kind="ask") == 2
    assert value(w, "phobos_time_to_first_token_seconds_count", model="extractive") == 2
    assert value(w, "phobos_answer_seconds_count", model="extractive") == 2
    assert value(w, "phobos_answer_seconds_bucket", model="extractive", le="+Inf") == 2
    assert value(w, "phobos_generated_tokens_total", model="extractive") > 0
    assert value(w, "phobos_workers_live") == 1
    assert value(w, "phobos_queue_depth") == 0
    assert value(w, "phobos_stream_lag", stream=keys.JOBS_STREAM) == 0
    assert value(w, "phobos_stream_pending", stream=keys.JOBS_STREAM) == 0
    assert value(w, "phobos_dead_letter_stream_length") == 1

    assert value(a, "phobos_jobs_submitted_total", kind="ingest", result="queued") == 1
    assert value(a, "phobos_jobs_submitted_total", kind="ask", result="queued") == 2
    assert value(a, "phobos_jobs_submitted_total", kind="ask", result="rate_limited") == 1
    assert value(a, "phobos_queue_depth") == 0  # every process reads the queue gauges from Redis

    for text in (worker_text, adapter_text):  # no user, conversation or question in any label
        assert USER not in text and SCOPE not in text and "crater" not in text

    job_lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()
                 if line.startswith("{") and '"phobos.jobs"' in line]
    asks = [line for line in job_lines if line["kind"] == "ask" and line["outcome"] == "ok"]
    assert len(asks) == 2
    assert all(line["scope"] == SCOPE and line["model"] == "extractive" and line["job_id"].startswith("console:")
               and line["first_token_s"] is not None and line["duration_s"] >= line["first_token_s"]
               for line in asks)
    log_text = (tmp_path / "worker.log").read_text()
    assert all(question not in log_text for question in QUESTIONS)  # PHOBOS_LOG_TEXT is off
    assert "Mount Kessler" not in log_text


def dead_letter_a_job_whose_worker_died(client) -> None:  # type: ignore[no-untyped-def]
    """A job read by a worker that then vanished: the live worker reclaims it over PHOBOS_MAX_DELIVERIES."""
    job = Job(id="metrics:dead-letter", kind=JobKind.ASK, scope=Scope.parse("console:test:dead"), user="crashed",
              reply_to=keys.reply_stream("nobody"), text="a question whose worker died")
    with client.pipeline(transaction=True) as pipe:  # add and take in one step: the live worker cannot take it
        pipe.xadd(keys.JOBS_STREAM, {"job": job.to_json()})
        pipe.xreadgroup(keys.WORKER_GROUP, "crashed-worker", {keys.JOBS_STREAM: ">"}, count=1)
        _, taken = pipe.execute()
    assert taken and taken[0][1], "the dying worker should hold the job"


def test_json_log_lines_carry_text_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    record = logging.LogRecord("phobos.jobs", logging.INFO, __file__, 1, "job %s done", ("j1",), None)
    record.__dict__.update(job_id="j1", scope=SCOPE, model="extractive", duration_s=1.5, question="secret question",
                           answer="secret answer")
    quiet = json.loads(logs.JsonFormatter().format(record))
    monkeypatch.setattr(logs, "_include_text", True)  # what PHOBOS_LOG_TEXT=true sets
    chatty = json.loads(logs.JsonFormatter().format(record))
    assert quiet["msg"] == "job j1 done" and quiet["job_id"] == "j1" and quiet["duration_s"] == 1.5
    assert "question" not in quiet and "answer" not in quiet
    assert chatty["question"] == "secret question" and chatty["answer"] == "secret answer"


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="PHOBOS_LOG_FORMAT"):
        logs.configure("INFO", "yaml")


def test_up_keeps_worker_logs_out_of_the_console(redis_server: RedisServer, redis_client,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    env = phobos_env(redis_server.url, PHOBOS_WORKER_MODELS="extractive", PHOBOS_DEFAULT_MODEL="extractive")
    env["PHOBOS_STATE_DIR"] = str(tmp_path / "state")
    result = subprocess.run([sys.executable, "-m", "phobos", "up"], input=b"/status\n", env=env, cwd=ROOT,
                            capture_output=True, timeout=300)
    chat = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, chat
    assert "1 worker(s) live" in result.stdout.decode()
    assert " INFO " not in chat  # the worker's and up's own log lines went to files
    assert f"Logs: {tmp_path / 'state' / 'logs'}" in chat
    assert "ready; serving extractive" in (tmp_path / "state" / "logs" / "worker.log").read_text()
