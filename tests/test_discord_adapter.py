"""The Discord adapter end to end: the real discord.py client against a local fake Discord, a real
Redis, and a real ``phobos worker`` process serving the fast deterministic "extractive" model.

Each test runs one scenario in ``asyncio.run`` (no async pytest plugin needed). One worker serves the
whole module; tests stay apart because every :class:`FakeDiscord` has its own guild and channel ids,
so no two tests share a scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.discord.adapter import HELP_TEXT, DiscordAdapter
from bot.discord.payloads import Gate
from bot.discord.replies import MARKUP, STREAMING_CURSOR, THINKING, AnswerReply, ChannelSurface
from bot.discord.settings import DiscordSettings
from core.documents import Citation
from core.rag import NO_DOCUMENTS_NOTE
from core.scope import Scope
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import Job, ReplyEvent, ReplyType
from tests.conftest import RedisServer, WorkerProcess
from tests.fakes import fake_discord
from tests.fakes.fake_discord import BOT_TOKEN, FakeDiscord, FakeMessage
from tests.pdfs import pdf_with_pages

pytestmark = pytest.mark.discord

WARRANTY_TEXT = "The Zephyr pump warranty lasts 24 months from the date of purchase."
NO_DOCUMENTS = NO_DOCUMENTS_NOTE.split(",")[0]  # "No documents are shared in this conversation yet"


@pytest.fixture(scope="module")
def worker_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real worker for the module (starting one takes seconds); yields the Redis URL it serves."""
    client = redis_server.client()
    worker = WorkerProcess(redis_server.url, "extractive", tmp_path_factory.mktemp("discord") / "worker.log",
                           PHOBOS_DEFAULT_MODEL="extractive")
    try:
        worker.wait_ready(client)
        yield redis_server.url
    finally:
        worker.stop()
        client.close()


def pdf_file(name: str, text: str = WARRANTY_TEXT) -> tuple[str, str, bytes]:
    """An attachment for :meth:`FakeDiscord.post_message`: a one-page PDF saying ``text``."""
    return name, "application/pdf", pdf_with_pages([text])


@contextlib.asynccontextmanager
async def running_bot(redis_url: str, **settings: Any) -> AsyncIterator[tuple[FakeDiscord, DiscordAdapter]]:
    """A fresh fake Discord and the adapter logged in to it, ready for events; ``settings`` override."""
    fake = FakeDiscord()
    await fake.start()
    patch = pytest.MonkeyPatch()
    fake.patch_discord_py(patch)
    redis_client = aioredis.from_url(redis_url)
    chosen = DiscordSettings(**{"token": BOT_TOKEN, "dev_guild_id": fake.guild_id, "edit_interval_s": 0.2,
                                **settings})
    adapter = DiscordAdapter(chosen, JobClient(redis_client, f"discord-test-{uuid.uuid4().hex[:8]}"),
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
        await fake.close()
        await redis_client.aclose()
        patch.undo()


def is_final(message: FakeMessage) -> bool:
    """Not a placeholder, status line or half-streamed text."""
    return not message.content.startswith("⏳") and not message.content.endswith(STREAMING_CURSOR)


def finals(fake: FakeDiscord, channel_id: int, containing: str = "") -> list[FakeMessage]:
    return [m for m in fake.bot_messages(channel_id) if is_final(m) and containing in m.content]


async def jobs_from(fake: FakeDiscord, adapter: DiscordAdapter) -> list[Job]:
    """The jobs this test's guild submitted (the stream is shared by the whole module)."""
    entries = await adapter.jobs.redis.xrange(keys.JOBS_STREAM)
    jobs = [Job.from_json(fields[b"job"]) for _id, fields in entries]
    return [job for job in jobs if job.scope.workspace == str(fake.guild_id)]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout=90))


# ---- tests ---------------------------------------------------------------------------------------

def test_start_prints_the_invite_syncs_commands_and_asks_for_message_content(
        worker_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            path = f"/applications/{fake_discord.APPLICATION_ID}/guilds/{fake.guild_id}/commands"
            assert {c["name"] for c in fake.synced_commands[path]} == {
                "ask", "model", "models", "docs", "forget", "status", "reset", "dm-search", "Ask Phobos"}
            assert fake.identify_payload["intents"] & (1 << 15), "the message content intent"
    run(scenario())
    printed = capsys.readouterr().out
    assert f"client_id={fake_discord.APPLICATION_ID}&scope=bot+applications.commands" in printed


def test_pdf_upload_is_indexed_then_a_mention_streams_an_answer_citing_it(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            upload = await fake.post_message("here is the manual", files=[pdf_file("manual.pdf")])
            status = await fake.wait_for(lambda: finals(fake, fake.channel_id, "✅"))
            assert "manual.pdf" in status[0].content and "Indexed" in status[0].content
            assert int(status[0].payload["message_reference"]["message_id"]) == upload.id
            assert len(status) == 1, "one status message, edited"

            question = await fake.post_message("how long is the pump warranty?", mention_bot=True)
            # Asked at channel level: a thread opens from the question (its id is the question's id).
            answer = (await fake.wait_for(lambda: finals(fake, question.id, "Sources:")))[0]
            assert "24 months" in answer.content
            jump = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{upload.id}"
            assert f"[1] manual.pdf, p. 1 <{jump}>" in answer.content
            assert answer.history[0] == THINKING, "a placeholder shows before the answer"
            # Whether a streaming edit shows before the final depends on how fast the extractive answer comes:
            # within one edit interval of the placeholder, the final alone replaces it (one edit, not two).
            # Streaming edits are checked where the test controls the deltas
            # (test_a_burst_of_deltas_is_coalesced_into_a_few_edits).
            assert answer.history[-1] == answer.content and len(answer.history) >= 2
            assert fake.requests_to("POST", f"/channels/{fake.channel_id}/typing"), "typing at once"
            assert all(m.payload["allowed_mentions"]["parse"] == [] for m in fake.bot_messages())
    run(scenario())


def test_a_burst_of_deltas_is_coalesced_into_a_few_edits(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url, edit_interval_s=0.3) as (fake, adapter):
            channel = adapter.get_channel(fake.channel_id)
            view = AnswerReply(ChannelSurface(channel, interval_s=0.3), MARKUP)  # type: ignore[arg-type]
            words = ("lorem ipsum dolor sit amet " * 8).split()
            for word in words:  # 40 deltas at once
                await view.feed(ReplyEvent("j", ReplyType.DELTA, text=word + " "))
            await view.flush()
            await view.finish(ReplyEvent("j", ReplyType.FINAL, text="lorem ipsum, in the end."), attempt=1)
            (message,) = fake.bot_messages(fake.channel_id)
            assert 2 <= len(message.history) < len(words), "it streamed, in fewer edits than deltas"
            assert message.content == "lorem ipsum, in the end."
    run(scenario())


def test_a_4500_character_answer_is_split_without_breaking_words_code_or_sources(worker_url: str) -> None:
    # The extractive model quotes a bounded number of words, so the long answer is fed to the view.
    words = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 characters
    code = "```python\n" + "\n".join(f"x_{i} = {i}" for i in range(80)) + "\n```"
    long_answer = f"{words}\n\n{code}"
    citations = tuple(Citation(f"handbook-{i}.pdf", (i, i + 1)) for i in range(1, 6))

    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, adapter):
            channel = adapter.get_channel(fake.channel_id)
            view = AnswerReply(ChannelSurface(channel, interval_s=0.01), MARKUP)  # type: ignore[arg-type]
            await view.finish(ReplyEvent("j", ReplyType.FINAL, text=long_answer, citations=citations), attempt=1)
            pieces = [m.content for m in fake.bot_messages(fake.channel_id)]
            assert sum(map(len, pieces)) >= 4500 and len(pieces) == 3
            assert all(len(p) <= 2000 for p in pieces)
            assert all(p.count("```") % 2 == 0 for p in pieces), "each piece closes its code block"
            tokens = " ".join(pieces).split()
            assert all(f"word{i:04d}" in tokens for i in range(400)), "no word is cut"
            source_lines = [line for p in pieces for line in p.splitlines() if line.startswith("[")]
            assert source_lines == [f"[{i}] handbook-{i}.pdf, pp. {i}-{i + 1}" for i in range(1, 6)]
    run(scenario())


def test_an_attachment_in_no_format_we_read_is_explained_when_mentioned_and_ignored_otherwise(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, adapter):
            before = await adapter.jobs.redis.xlen(keys.JOBS_STREAM)
            await fake.post_message("cat picture", files=[("cat.png", "image/png", b"\x89PNG....")])
            await fake.post_message("", mention_bot=True, files=[("budget.xlsx", "application/vnd.ms-excel", b"PK")])
            reply = await fake.wait_for(lambda: fake.bot_messages())
            assert len(reply) == 1
            assert "budget.xlsx" in reply[0].content and "not a format I read" in reply[0].content
            assert "Word (.docx)" in reply[0].content
            assert await adapter.jobs.redis.xlen(keys.JOBS_STREAM) == before, "no job for either"
    run(scenario())


def test_a_file_named_pdf_that_is_not_one_gets_the_workers_explanation(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            await fake.post_message("", files=[("fake.pdf", "application/pdf", b"just some text")])
            failed = await fake.wait_for(lambda: finals(fake, fake.channel_id, "❌"))
            assert "fake.pdf is not a PDF" in failed[0].content
    run(scenario())


def test_a_pdf_over_the_size_limit_is_refused_without_downloading_it(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url, max_attachment_mb=0.0001) as (fake, _adapter):
            await fake.post_message("", files=[pdf_file("big.pdf")])
            refused = await fake.wait_for(lambda: finals(fake, fake.channel_id, "❌"))
            assert "big.pdf" in refused[0].content and "limit" in refused[0].content
    run(scenario())


def test_messages_from_bots_are_ignored(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, adapter):
            before = await adapter.jobs.redis.xlen(keys.JOBS_STREAM)
            await fake.post_message("what is the warranty?", mention_bot=True, is_bot=True, author_id=4242)
            await fake.post_message("a", mention_bot=True, is_bot=True, files=[pdf_file("m.pdf")])
            # A person's message after them proves the bots' messages were handled (and skipped).
            await fake.post_message("", mention_bot=True)
            await fake.wait_for(lambda: fake.bot_messages())
            assert [m.content for m in fake.bot_messages()] == [HELP_TEXT]
            assert await adapter.jobs.redis.xlen(keys.JOBS_STREAM) == before
    run(scenario())


def test_slash_ask_is_deferred_at_once_then_answered_through_the_interaction(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            interaction = await fake.slash_command("ask", {"question": "anything?"})
            await fake.wait_for(lambda: interaction.original and is_final(interaction.original)
                                and NO_DOCUMENTS in interaction.original.content)
            assert interaction.callbacks[0]["type"] == fake_discord.DEFERRED_CHANNEL_MESSAGE
            callback = fake.requests_to("POST", f"/interactions/{interaction.payload['id']}")[0]
            assert callback.at - interaction.dispatched_at < 3.0, "Discord wants an answer within 3 s"
            assert interaction.original is not None and interaction.original.history[0] == ""
            assert interaction.original.edit_times[0] > callback.at, "the answer comes after the defer"
    run(scenario())


def test_an_expired_interaction_token_falls_back_to_a_channel_message(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            fake.interaction_token_ttl_s = 0.0  # Discord refuses the token (401 / 50027) right after the defer
            interaction = await fake.slash_command("docs")
            message = await fake.wait_for(lambda: [m for m in finals(fake, fake.channel_id, "No documents")
                                                   if m is not interaction.original])
            assert "shared in this conversation" in message[0].content
            assert interaction.original is not None and interaction.original.history == [""]
            assert [code for _request, code in fake.refused] == [50027], "the token was tried, then the channel"
    run(scenario())


def test_reset_forgets_the_conversations_earlier_turns(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            await fake.slash_command("reset")
            message = await fake.wait_for(lambda: finals(fake, fake.channel_id, "no earlier questions"))
            assert "to forget" in message[0].content
    run(scenario())


def test_model_switching_with_autocomplete_from_live_workers(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url, thread_on_channel_question=False) as (fake, _adapter):
            typing = await fake.slash_command("model", {"name": "EXT"}, focused="name")
            await fake.wait_for(lambda: typing.callbacks)
            assert typing.callbacks[0]["type"] == fake_discord.AUTOCOMPLETE_RESULT
            assert [c["value"] for c in typing.callbacks[0]["data"]["choices"]] == ["extractive"]

            chosen = await fake.slash_command("model", {"name": "smollm2-135m"})
            await fake.wait_for(lambda: chosen.original and "uses smollm2-135m" in chosen.original.content)
            await fake.post_message("anything?", mention_bot=True)
            await fake.wait_for(lambda: finals(fake, fake.channel_id, "No worker serves the model"))

            back = await fake.slash_command("model", {"name": "extractive"})
            await fake.wait_for(lambda: back.original and "now uses extractive" in back.original.content)
            await fake.post_message("anything now?", mention_bot=True)
            await fake.wait_for(lambda: finals(fake, fake.channel_id, NO_DOCUMENTS))
    run(scenario())


def test_docs_and_forget(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            await fake.post_message("", files=[pdf_file("manual.pdf")])
            await fake.wait_for(lambda: finals(fake, fake.channel_id, "✅"))
            docs = await fake.slash_command("docs")
            await fake.wait_for(lambda: docs.original and "manual.pdf" in docs.original.content)
            forget = await fake.slash_command("forget", {"document": "manual.pdf"})
            await fake.wait_for(lambda: forget.original and "Forgot manual.pdf" in forget.original.content)
    run(scenario())


def test_a_pdf_shared_in_a_thread_is_searched_from_that_thread(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            opener = await fake.post_message("any docs yet?", mention_bot=True)  # opens a thread
            await fake.wait_for(lambda: finals(fake, opener.id, NO_DOCUMENTS))
            await fake.post_message("", channel_id=opener.id, files=[pdf_file("thread.pdf")])
            await fake.wait_for(lambda: finals(fake, opener.id, "✅"))
            await fake.post_message("how long is the warranty?", channel_id=opener.id, mention_bot=True)
            await fake.wait_for(lambda: finals(fake, opener.id, "thread.pdf, p. 1"))
            # The channel itself does not see the thread's document.
            await fake.post_message("how long is the warranty?", mention_bot=True,
                                    channel_id=fake.channel_id)
            await fake.wait_for(lambda: [m for m in fake.bot_messages() if m.channel_id not in
                                         (fake.channel_id, opener.id) and NO_DOCUMENTS in m.content])
    run(scenario())


def test_a_question_sent_with_its_pdf_waits_for_the_pdf_to_be_indexed(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            message = await fake.post_message("how long is the warranty?", mention_bot=True,
                                              files=[pdf_file("both.pdf")])
            answer = await fake.wait_for(lambda: finals(fake, message.id, "Sources:"))
            assert "both.pdf, p. 1" in answer[0].content
    run(scenario())


def test_a_redelivered_message_is_answered_once(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url, thread_on_channel_question=False) as (fake, _adapter):
            question = await fake.post_message("anything?", mention_bot=True)
            await fake.redeliver(question)
            await fake.post_message("and now?", mention_bot=True)  # handled after the redelivery
            await fake.wait_for(lambda: len(finals(fake, fake.channel_id, NO_DOCUMENTS)) == 2)
            assert len(fake.bot_messages()) == 2, [m.history for m in fake.bot_messages()]
    run(scenario())


def test_direct_messages_are_questions_unless_dms_are_off(worker_url: str) -> None:
    async def scenario(allow_dms: bool) -> None:
        async with running_bot(worker_url, allow_dms=allow_dms) as (fake, _adapter):
            await fake.post_message("is there a warranty?", channel_id=fake.dm_channel_id)
            await fake.post_message("", mention_bot=True)  # a guild message: the DM was handled before it
            await fake.wait_for(lambda: fake.bot_messages(fake.channel_id))
            if allow_dms:
                await fake.wait_for(lambda: finals(fake, fake.dm_channel_id, NO_DOCUMENTS))
            else:
                assert fake.bot_messages(fake.dm_channel_id) == []

    run(scenario(allow_dms=True))
    run(scenario(allow_dms=False))


def test_role_allow_list(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url, thread_on_channel_question=False) as (fake, adapter):
            # The role's id exists only once the fake does; the gate is what allowed_role_ids builds.
            adapter.gate = Gate(role_ids=frozenset({fake.role_id}))
            await fake.post_message("outsider question?", mention_bot=True)
            await fake.post_message("member question?", mention_bot=True, roles=[fake.role_id])
            await fake.wait_for(lambda: finals(fake, fake.channel_id, NO_DOCUMENTS))
            assert [j.text for j in await jobs_from(fake, adapter)] == ["member question?"]
            denied = await fake.slash_command("status")
            await fake.wait_for(lambda: denied.callbacks)
            assert denied.callbacks[0]["data"]["flags"] & 64, "refused privately (ephemeral)"
    run(scenario())


def test_an_error_after_a_long_streamed_answer_leaves_one_message_saying_so(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, adapter):
            channel = adapter.get_channel(fake.channel_id)
            view = AnswerReply(ChannelSurface(channel, interval_s=0.01), MARKUP)  # type: ignore[arg-type]
            await view.feed(ReplyEvent("j", ReplyType.DELTA, text="partial answer " * 200))  # 3,000 chars
            assert len(fake.bot_messages(fake.channel_id)) == 2
            await view.finish(ReplyEvent("j", ReplyType.ERROR, text="The worker stopped; please ask again."), 1)
            assert [m.content for m in fake.bot_messages(fake.channel_id)] == [
                "⚠️ The worker stopped; please ask again."]
    run(scenario())


def test_a_thread_the_bot_has_not_seen_is_looked_up_so_its_pdfs_belong_to_it(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, adapter):
            thread = fake.add_thread(fake.channel_id, fake.snowflake())  # no THREAD_CREATE reaches the bot
            thread_id = int(thread["id"])
            await fake.post_message("", channel_id=thread_id, files=[pdf_file("late.pdf")])
            await fake.wait_for(lambda: finals(fake, thread_id, "✅"))
            (ingest,) = [j for j in await jobs_from(fake, adapter) if j.file_name == "late.pdf"]
            assert ingest.scope == Scope("discord", str(fake.guild_id), str(fake.channel_id), str(thread_id))
    run(scenario())
