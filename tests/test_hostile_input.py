"""Careless and hostile input gets one clear sentence, never a traceback, a hang, silence or a silent drop.

Office XML parts refused by a DTD-refusing parser whatever their name or encoding; the CLI's bad paths
and scopes; bounded reads; question normalisation on every entry point; extraction that says what it
dropped; file names shown escaped. (The child's environment and network: tests/test_child_env.py.)
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.console import ConsoleAdapter
from core.documents import Citation
from core.ingest import IngestLimits, ingest_document
from core.local_files import read_local_file
from core.office import check_package
from core.pdf import DocumentError
from core.rag import RagEngine
from core.scope import Scope
from core.text_safety import EMPTY_QUESTION_HINT, escape_name, normalise_question
from jobs import keys
from jobs.admission import Admission
from jobs.client import JobClient, run_job
from jobs.protocol import Job, JobKind, ReplyType
from tests.conftest import ROOT, phobos_env
from tests.office_files import docx_with_sections, pptx_with_slides
from workers.store import RedisDocumentStore

CLI = [sys.executable, "-m", "phobos"]
LIMITS = IngestLimits(max_bytes=10_000_000, max_pages=100, chunk_tokens=60, overlap_tokens=10,
                      parse_timeout_s=60, parse_memory_mb=1024)
DTD = '<!DOCTYPE w:document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
DEEP_FACT = "The Zanzibar leopard hunts at dusk near the old spice warehouse."


def run_cli(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], env=env, cwd=ROOT, input=stdin, capture_output=True, timeout=300)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    print(f"$ phobos {' '.join(args)} -> {done.returncode}\n{out}{err}")
    assert "Traceback" not in err
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def rewrite(data: bytes, change: dict[str, bytes]) -> bytes:
    """The package with parts replaced or added."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            if entry.filename not in change:
                target.writestr(entry.filename, source.read(entry.filename))
        for name, body in change.items():
            target.writestr(name, body)
    return out.getvalue()


def with_content_type(data: bytes, part_name: str, content_type: str) -> bytes:
    types = zipfile.ZipFile(io.BytesIO(data)).read("[Content_Types].xml").decode()
    types = types.replace("</Types>", f'<Override PartName="/{part_name}" ContentType="{content_type}"/></Types>')
    return rewrite(data, {"[Content_Types].xml": types.encode()})


def document_xml(data: bytes) -> str:
    """The main part, its declaration in double quotes (python-docx writes single ones)."""
    return zipfile.ZipFile(io.BytesIO(data)).read("word/document.xml").decode().replace(
        "encoding='UTF-8'", 'encoding="UTF-8"')


def with_dtd(xml: str) -> str:
    at = xml.index("?>") + 2
    return xml[:at] + DTD + xml[at:]


# ---- Office XML parts: a DTD-refusing parser on every XML part ------------------------------------------


def hostile_packages() -> dict[str, bytes]:
    docx = docx_with_sections()
    main = with_dtd(document_xml(docx))
    utf16 = main.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    custom = with_dtd('<?xml version="1.0" encoding="UTF-8"?><note>hi</note>')
    return {
        "UTF-16 main part": rewrite(docx, {"word/document.xml": utf16.encode("utf-16")}),
        "UTF-16BE part without a byte-order mark": rewrite(docx, {"word/document.xml": utf16.replace(
            "UTF-16", "UTF-16BE").encode("utf-16-be")}),
        "part named .dat": rewrite(docx, {"word/notes.dat": custom.encode()}),
        "UTF-16 part named .bin": rewrite(docx, {"customXml/item9.bin": custom.replace(
            "UTF-8", "UTF-16").encode("utf-16")}),
        "declared XML by content type": with_content_type(
            rewrite(docx, {"word/extra.part": custom.encode()}), "word/extra.part", "application/xml"),
        "internal entity only (billion laughs)": rewrite(docx, {"word/document.xml": document_xml(docx).replace(
            "?>", '?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>', 1).encode()}),
        "pptx slide in UTF-16": rewrite(pptx_with_slides(), {"ppt/slides/slide1.xml": with_dtd(
            zipfile.ZipFile(io.BytesIO(pptx_with_slides())).read("ppt/slides/slide1.xml").decode()).replace(
            "encoding='UTF-8'", "encoding='UTF-16'").encode("utf-16")}),
    }


@pytest.mark.parametrize("case", list(hostile_packages()))
def test_a_dtd_in_any_xml_part_is_refused_whatever_its_name_or_encoding(case: str) -> None:
    with pytest.raises(DocumentError, match="document type declaration"):
        check_package(hostile_packages()[case], "hostile.docx", 200_000_000)


def test_a_declared_xml_part_in_an_encoding_expat_cannot_read_is_refused() -> None:
    docx = docx_with_sections()
    utf32 = with_dtd(document_xml(docx)).replace('encoding="UTF-8"', 'encoding="UTF-32"').encode("utf-32")
    with pytest.raises(DocumentError, match="not well-formed XML"):
        check_package(rewrite(docx, {"word/document.xml": utf32}), "utf32.docx", 200_000_000)


def test_real_office_files_and_binary_parts_that_start_like_xml_pass() -> None:
    docx = rewrite(docx_with_sections(), {"word/media/image9.bin": b"<\x00\x01\xff binary, not XML" * 40})
    check_package(docx, "fine.docx", 200_000_000)
    check_package(pptx_with_slides(), "fine.pptx", 200_000_000)


# ---- the CLI: one sentence and a non-zero exit ---------------------------------------------------------


@pytest.fixture
def cli_env(redis_server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return phobos_env(redis_server.url, PHOBOS_LOG_LEVEL="WARNING", PHOBOS_MAX_UPLOAD_MB="1")


def test_ingest_of_a_missing_file_or_a_directory_says_so(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = run_cli(["ingest", str(tmp_path / "nosuch.pdf"), "--scope", "test:w:hostile"], cli_env)
    assert missing.returncode == 1 and "There is no file at" in missing.stderr
    directory = run_cli(["ingest", str(tmp_path), "--scope", "test:w:hostile"], cli_env)
    assert directory.returncode == 1 and "is a directory" in directory.stderr


@pytest.mark.parametrize("scope", ["console:probe", "console::c1", ":a:b", "a:b:c:d:e"])
@pytest.mark.parametrize("command", [["ingest", "README.md"], ["search", "what?"], ["ask", "what?"]])
def test_a_malformed_scope_is_one_sentence_and_exit_2(cli_env: dict[str, str], scope: str,
                                                      command: list[str]) -> None:
    done = run_cli([*command, "--scope", scope], cli_env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"phobos {command[0]}: {scope!r} is not a scope: a scope is platform:workspace:channel[:thread], "
        "each part non-empty (for example console:local:console)."]


def test_ingest_of_dev_zero_stops_at_the_limit(cli_env: dict[str, str]) -> None:
    done = run_cli(["ingest", "/dev/zero", "--scope", "test:w:hostile"], cli_env)
    assert done.returncode == 1 and "zero is larger than the 1 MB limit" in done.stderr


def test_a_file_over_the_limit_is_refused_reading_only_past_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as f:  # 200 MB, sparse: nothing is written to disk
        f.truncate(200_000_000)
    with pytest.raises(DocumentError, match="larger than the 50 MB limit"):
        read_local_file(big, 50_000_000)
    fifo = tmp_path / "endless"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat /dev/zero > {fifo}"])
    try:  # a stream with no end and no size: refused once the limit is passed
        with pytest.raises(DocumentError, match="larger than the 1 MB limit"):
            read_local_file(fifo, 1_000_000)
    finally:
        writer.kill()
        writer.wait()


def test_search_from_stdin_survives_invalid_utf8_and_answers_every_question(cli_env: dict[str, str],
                                                                            tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("The cafe opens at seven.\n\nThe library closes at nine.\n")
    assert run_cli(["ingest", str(notes), "--scope", "test:w:utf8"], cli_env).returncode == 0
    done = run_cli(["search", "--scope", "test:w:utf8"], cli_env,
                   stdin=b"caf\xff\xfe opens when?\n\x1b[2J\xe2\x80\xae\n\nWhen does the library close?\n")
    assert done.stdout.count("Q: ") == 2
    assert "Q: caf\ufffd\ufffd opens when?" in done.stdout and "Q: When does the library close?" in done.stdout
    assert done.returncode == 1 and done.stderr.count(EMPTY_QUESTION_HINT) == 1  # the line of control codes
    argv = run_cli(["search", "caf\udcff opens when?", "--scope", "test:w:utf8"], cli_env)
    assert argv.returncode == 0 and "notes.txt" in argv.stdout


def test_ask_refuses_an_empty_question_with_a_hint(cli_env: dict[str, str]) -> None:
    done = run_cli(["ask", " \u202e\x07 "], cli_env)
    assert done.returncode == 2 and EMPTY_QUESTION_HINT in done.stderr


# ---- questions: one rule, on every entry point ----------------------------------------------------------


@pytest.mark.parametrize(("raw", "normalised"), [
    ("caf\udcff?", "caf\ufffd?"),  # a byte smuggled in by surrogateescape
    ("\ud800 lone", "\ufffd lone"),  # a surrogate from JSON
    (b"caf\xff?", "caf\ufffd?"),
    ("  \x1b[31mred\x1b[0m \u202etxt.exe\u202c  ", "red txt.exe"),
    ("\x1b]0;owned\x07title?", "title?"),
    ("line one\r\nline\ttwo", "line one\nline\ttwo"),
    ("\u2067\u200f\x00 ", ""),
    ("👩\u200d💻 ok", "👩\u200d💻 ok"),  # a joiner is not a control character
])
def test_questions_are_normalised(raw: str | bytes, normalised: str) -> None:
    assert normalise_question(raw) == normalised


def ask_job(client: JobClient, text: str) -> Job:
    return Job(id=f"test:{uuid.uuid4().hex}", kind=JobKind.ASK, scope=Scope("test", "w", "q"), user="u",
               reply_to=client.reply_stream, text=text)


def test_the_queue_refuses_an_empty_question_with_a_hint_and_queues_a_normalised_one(redis_server,
                                                                                   redis_client) -> None:
    async def scenario() -> None:
        connection = aioredis.Redis.from_url(redis_server.url)
        client = JobClient(connection, adapter_id="hostile")
        try:
            empty = ask_job(client, "\x1b[2J\u202e\x00")
            final = await run_job(client, empty, timeout_s=30)
            assert final.type is ReplyType.ERROR and final.text == EMPTY_QUESTION_HINT
            assert (await client.submit(empty)).status is Admission.DUPLICATE  # redelivered: hinted once
            assert redis_client.xlen(keys.JOBS_STREAM) == 0
            result = await client.submit(ask_job(client, "caf\udcff \u202equestion"))
            assert result.status is Admission.QUEUED
        finally:
            await connection.aclose()

    asyncio.run(scenario())
    ((_, fields),) = redis_client.xrange(keys.JOBS_STREAM)
    assert Job.from_json(fields[b"job"]).text == "caf\ufffd question"


def test_the_console_hints_at_an_empty_question_and_echoes_it_clean(redis_server) -> None:
    async def scenario() -> str:
        connection = aioredis.Redis.from_url(redis_server.url)
        out = io.StringIO()
        try:
            console = ConsoleAdapter(JobClient(connection, adapter_id="console-hostile"), out=out)
            await console.run(io.StringIO("\x1b]0;owned\x07\u202e\n"))
        finally:
            await connection.aclose()
        return out.getvalue()

    shown = asyncio.run(scenario())
    print(shown)
    assert EMPTY_QUESTION_HINT in shown and "\x1b" not in shown and "\u202e" not in shown


def test_a_worker_answers_a_question_with_invalid_utf8_queued_by_anyone(redis_server, redis_client,
                                                                       start_worker, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    ingest_document(b"The cafe opens at seven every morning.\n", "cafe.txt", "test:w:worker", embedder, store,
                    LIMITS)
    start_worker("extractive")
    from jobs.admission import admit

    async def scenario() -> ReplyType:
        connection = aioredis.Redis.from_url(redis_server.url)
        client = JobClient(connection, adapter_id="raw-asker")
        try:
            job = Job(id=f"test:{uuid.uuid4().hex}", kind=JobKind.ASK, scope=Scope("test", "w", "worker"),
                      user="u", reply_to=client.reply_stream, text="When does the caf\udcff open?", model="extractive")
            await client.start_listening()
            await admit(connection, job, client.limits)  # straight into the queue, past the client's rule
            async for event in client.replies():
                if event.job_id == job.id and event.is_terminal:
                    print(event.type, event.text)
                    return event.type
            raise AssertionError("no reply")
        finally:
            await connection.aclose()

    assert asyncio.run(asyncio.wait_for(scenario(), 120)) is ReplyType.FINAL


# ---- extraction says what it dropped; names are escaped; no bidi override in text ----------------------


def deep_html(depth: int) -> bytes:
    return (f"<html><head><title>Spice notes</title></head><body><p>The warehouse ledger lists cloves.</p>"
            f"{'<div>' * depth}<p>{DEEP_FACT}</p>{'</div>' * depth}</body></html>").encode()


def test_text_nested_300_deep_is_indexed(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    result = ingest_document(deep_html(300), "deep.html", "test:w:deep", embedder, store, LIMITS)
    assert result.notes == ()
    hits = RagEngine(embedder, store).retrieve("When does the Zanzibar leopard hunt?", Scope("test", "w", "deep"))
    assert DEEP_FACT in hits[0].chunk.text


def test_text_too_deep_to_read_is_reported_not_silently_dropped(redis_client, embedder) -> None:
    result = ingest_document(deep_html(3000), "deeper.html", "test:w:deeper", embedder,
                             RedisDocumentStore(redis_client), LIMITS)
    print(result.summary())
    assert "nested more than 2,048 elements deep could not be read and was not indexed" in result.summary()


def test_names_are_escaped_and_bidi_overrides_leave_document_text(redis_client, embedder) -> None:
    store = RedisDocumentStore(redis_client)
    name = "esc\x1b[31mred\u202eexe.txt"
    result = ingest_document("The password is \u202edrowssap\u202c in reverse.\n".encode(), name, "test:w:names",
                             embedder, store, LIMITS)
    summary = result.summary()
    print(summary)
    assert "\x1b" not in summary and "\u202e" not in summary and "esc\\x1b[31mred\\u202eexe.txt" in summary
    (info,) = store.list_documents(["test:w:names"])
    assert info.file_name == escape_name(name)
    hits = RagEngine(embedder, store).retrieve("password", Scope("test", "w", "names"))
    assert hits and all("\u202e" not in hit.chunk.text and "\u202c" not in hit.chunk.text for hit in hits)
    # a document stored before names were escaped is still shown escaped
    assert Citation(name, (1,)).label() == "esc\\x1b[31mred\\u202eexe.txt, p. 1"


def test_a_slack_file_name_is_escaped_where_the_adapter_first_sees_it() -> None:
    from bot.slack.files import SharedFile

    shared = SharedFile.from_event({"id": "F1", "name": "report\x1b[8m\u202efdp.pdf", "filetype": "pdf"})
    assert shared.name == "report\\x1b[8m\\u202efdp.pdf" and shared.is_pdf
