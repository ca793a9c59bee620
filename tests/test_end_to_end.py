"""A real Redis, real worker processes, the real default models, driven through the console adapter."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

from bot.console import ConsoleAdapter
from core.scope import Scope
from jobs import keys
from jobs.client import JobClient, run_job
from jobs.protocol import Job, JobKind, ReplyEvent, ReplyType
from tests.conftest import ROOT, WorkerProcess, phobos_env
from tests.pdfs import FACT_PAGES, encrypted_pdf, pdf_with_pages, textless_pdf


class Conversation:
    """A console conversation in its own scope; collects every reply event it sees."""

    def __init__(self, redis_url: str, channel: str):
        self.redis_url = redis_url
        self.scope = Scope("console", "test", channel)
        self.out = io.StringIO()

    async def say(self, line: str) -> ReplyEvent | None:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            console = ConsoleAdapter(JobClient(client, f"test-{self.scope.channel}"), scope=self.scope,
                                     out=self.out, reply_timeout_s=240)
            return await console.handle_line(line)
        finally:
            await client.aclose()

    def __call__(self, line: str) -> ReplyEvent | None:
        return asyncio.run(self.say(line))


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_ingest_then_ask_cites_the_right_page(redis_server, start_worker, tmp_path) -> None:
    start_worker("smollm2-135m", PHOBOS_DEFAULT_MODEL="smollm2-135m", PHOBOS_TOP_K="1", PHOBOS_CHUNK_TOKENS="60")
    talk = Conversation(redis_server.url, "facts")
    uploaded = talk("/upload " + write(tmp_path / "facts.pdf", pdf_with_pages(FACT_PAGES)))
    assert uploaded is not None and uploaded.type is ReplyType.FINAL
    assert "Indexed facts.pdf: 4 pages" in uploaded.text
    assert "reading pages" in talk.out.getvalue()  # progress was shown

    answer = talk("What colour is the crater lake of Mount Kessler?")
    assert answer is not None and answer.type is ReplyType.FINAL, answer
    (citation,) = answer.citations  # top-1 retrieval: exactly one source, the crater-lake page
    assert citation.file_name == "facts.pdf" and 3 in citation.pages
    assert answer.text  # the model wrote something
    printed = talk.out.getvalue()
    assert "phobos> " in printed  # streamed as deltas before the final event
    assert f"Sources:\n[1] {citation.label()}" in printed


def test_bad_input_gets_a_clear_reply_and_the_worker_keeps_serving(redis_server, start_worker, tmp_path) -> None:
    worker = start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive")
    talk = Conversation(redis_server.url, "bad-input")

    empty_scope_answer = talk("What does the contract say about penalties?")
    assert empty_scope_answer is not None and empty_scope_answer.type is ReplyType.FINAL
    assert "No documents are shared in this conversation" in empty_scope_answer.text

    cases = {
        "page.pdf": (b"<!DOCTYPE html><html><body>Not found</body></html>", "is not a PDF"),
        "zero.pdf": (b"", "is empty"),
        "scan.pdf": (textless_pdf(), "no text layer"),
        "locked.pdf": (encrypted_pdf(), "password-protected"),
        "broken.pdf": (b"%PDF-1.4\n" + b"\xff\x00junk" * 100, "cannot be opened"),
    }
    for name, (data, message) in cases.items():
        reply = talk("/upload " + write(tmp_path / name, data))
        assert reply is not None and reply.type is ReplyType.ERROR, name
        assert message in reply.text and name in reply.text

    unknown = talk("/model gpt-17")
    assert unknown is not None and unknown.type is ReplyType.ERROR
    assert "There is no model called 'gpt-17'" in unknown.text and "smollm2-135m" in unknown.text

    not_served = talk("/model smollm2-135m")  # known, but this worker serves only extractive
    assert not_served is not None and not_served.type is ReplyType.FINAL
    assert "No worker serves it right now" in not_served.text
    refused = talk("Is anything shared?")
    assert refused is not None and refused.type is ReplyType.ERROR
    assert "No worker serves the model 'smollm2-135m'" in refused.text and "extractive" in refused.text
    talk("/model extractive")

    assert worker.is_alive()
    talk("/upload " + write(tmp_path / "facts.pdf", pdf_with_pages(FACT_PAGES)))
    answer = talk("Where does the night train to Hallstatt leave from?")
    assert answer is not None and answer.type is ReplyType.FINAL
    assert "platform nine" in answer.text
    assert any(4 in c.pages for c in answer.citations)
    docs = talk("/docs")
    assert docs is not None and "facts.pdf (4 pages" in docs.text


def test_a_redelivered_event_makes_one_job(redis_server, start_worker) -> None:
    start_worker("extractive")

    async def scenario() -> list[ReplyEvent]:
        client = aioredis.Redis.from_url(redis_server.url)
        jobs = JobClient(client, "dedupe")
        await jobs.start_listening()
        job = Job(id="console:event-42", kind=JobKind.STATUS, scope=Scope("console", "t", "c"), user="u",
                  reply_to=jobs.reply_stream)
        accepted = [(await jobs.submit(job)).status for _ in range(4)]
        assert accepted == ["queued", "duplicate", "duplicate", "duplicate"]
        async with asyncio.timeout(60):
            async for event in jobs.replies(block_ms=300):
                if event.is_terminal:
                    break
        await asyncio.sleep(1.5)  # a second (wrong) answer would arrive within this window
        extra = await client.xrange(jobs.reply_stream)
        await client.aclose()
        return [e for e in (ReplyEvent.from_json(f[b"event"]) for _, f in extra) if e.is_terminal]

    assert len(asyncio.run(scenario())) == 1


def test_phobos_ask_goes_through_the_queue(redis_server, redis_client, start_worker, tmp_path) -> None:
    env = phobos_env(redis_server.url, PHOBOS_CHUNK_TOKENS="60")
    cli = [sys.executable, "-m", "phobos"]
    no_worker = subprocess.run([*cli, "ask", "anything?", "--scope", "test:w:ask"], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert no_worker.returncode == 2 and "No worker is running" in no_worker.stderr

    start_worker("extractive")
    pdf = write(tmp_path / "facts.pdf", pdf_with_pages(FACT_PAGES))
    subprocess.run([*cli, "ingest", pdf, "--scope", "test:w:ask"], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    asked = subprocess.run([*cli, "ask", "How many hives are in the apiary?", "--scope", "test:w:ask",
                            "--model", "extractive", "--json"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert asked.returncode == 0, asked.stderr
    result = json.loads(asked.stdout)
    assert result["type"] == "final" and "twelve hives" in result["text"]
    assert any(c["file"] == "facts.pdf" and 2 in c["pages"] for c in result["citations"])


def test_a_question_is_answered_while_a_long_ingest_runs(redis_server, start_worker, tmp_path) -> None:
    # One page per slice: the worker looks for waiting jobs after every page, so once the ingest has
    # reported progress hundreds of slice boundaries remain for the question to be taken at.
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_INGEST_SLICE_PAGES="1")
    facts = Conversation(redis_server.url, "quick")
    facts("/upload " + write(tmp_path / "facts.pdf", pdf_with_pages(FACT_PAGES)))
    long_pages = [f"Chapter {n}. " + " ".join(f"Paragraph {n}.{i} describes item {n * i} of the catalogue."
                                              for i in range(12)) for n in range(500)]
    big = write(tmp_path / "catalogue.pdf", pdf_with_pages(long_pages))
    second = write(tmp_path / "more.pdf", pdf_with_pages([*FACT_PAGES[::-1], "An appendix."]))

    async def scenario() -> list[str]:
        finished: list[str] = []
        big_ingest_is_slicing = asyncio.Event()

        async def ingest_big() -> None:
            client = aioredis.Redis.from_url(redis_server.url)
            try:
                jobs = JobClient(client, "test-library")
                job = Job(id="console:big-ingest", kind=JobKind.INGEST, scope=Scope("console", "test", "library"),
                          user="console-user", reply_to=jobs.reply_stream, file_name="catalogue.pdf")

                def watch(event: ReplyEvent) -> None:
                    if event.type is ReplyType.PROGRESS and event.done:
                        big_ingest_is_slicing.set()  # pages are being indexed: slice boundaries lie ahead

                event = await run_job(jobs, job, Path(big).read_bytes(), on_event=watch, timeout_s=240)
                assert event.type is ReplyType.FINAL, event
                finished.append("big ingest")
            finally:
                await client.aclose()

        async def after_progress(talk: Conversation, line: str, label: str) -> None:
            await big_ingest_is_slicing.wait()  # sent while the long ingest runs, not before or after it
            event = await talk.say(line)
            assert event is not None and event.type is ReplyType.FINAL, (label, event)
            finished.append(label)

        await asyncio.gather(
            ingest_big(),
            after_progress(Conversation(redis_server.url, "library2"), "/upload " + second, "second ingest"),
            after_progress(facts, "Who made the lighthouse lens?", "question"),
        )
        return finished

    finished = asyncio.run(scenario())
    # The question overtook the long ingest; the ingest that arrived meanwhile was handed back, not lost.
    assert finished.index("question") < finished.index("big ingest")
    assert set(finished) == {"big ingest", "second ingest", "question"}


def ask_while_paused(talk: Conversation, question: str, paused: WorkerProcess, client: redis.Redis,
                     model: str) -> ReplyEvent | None:
    """Ask while only the other worker reads the general stream, so it must forward the ask to ``model``'s
    stream; the paused worker resumes once the forwarded entry is there, and answers it."""
    forwarded_before = client.xlen(keys.model_stream(model))
    paused.process.send_signal(signal.SIGSTOP)
    time.sleep(1.5)  # its blocking read (at most 1 s) has ended: it cannot be handed the new entry

    def resume_once_forwarded() -> None:
        deadline = time.monotonic() + 120
        while client.xlen(keys.model_stream(model)) == forwarded_before and time.monotonic() < deadline:
            time.sleep(0.05)
        paused.process.send_signal(signal.SIGCONT)

    resumer = threading.Thread(target=resume_once_forwarded)
    resumer.start()
    try:
        return talk(question)
    finally:
        resumer.join()
        paused.process.send_signal(signal.SIGCONT)


def test_asks_go_to_the_worker_serving_the_conversations_model(redis_server, redis_client, start_worker,
                                                               tmp_path) -> None:
    quoting = start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_CHUNK_TOKENS="60")
    echoing = start_worker("echo", PHOBOS_DEFAULT_MODEL="echo", PHOBOS_CHUNK_TOKENS="60")
    talk = Conversation(redis_server.url, "routing")
    talk("/upload " + write(tmp_path / "facts.pdf", pdf_with_pages(FACT_PAGES)))
    question = "Where does the night train to Hallstatt leave from?"

    def is_echoed(event: ReplyEvent | None) -> bool:  # echo repeats its prompt; extractive quotes sources
        assert event is not None and event.type is ReplyType.FINAL, event
        return "Question: " + question in event.text

    assert talk("/model echo") is not None
    assert is_echoed(ask_while_paused(talk, question, echoing, redis_client, "echo"))
    assert all(is_echoed(talk(question)) for _ in range(3))

    assert talk("/model extractive") is not None
    quoted = ask_while_paused(talk, question, quoting, redis_client, "extractive")
    assert not is_echoed(quoted) and quoted is not None and "platform nine" in quoted.text
    assert not any(is_echoed(talk(question)) for _ in range(3))
    logs = quoting.log_path.read_text() + echoing.log_path.read_text()
    assert "forwarded to the workers serving echo" in logs and "forwarded to the workers serving extractive" in logs

    talk("/model smollm2-135m")  # known, but no worker serves it
    refused = talk(question)
    assert refused is not None and refused.type is ReplyType.ERROR
    assert "No worker serves the model 'smollm2-135m'" in refused.text and "echo, extractive" in refused.text
    assert quoting.is_alive() and echoing.is_alive()
