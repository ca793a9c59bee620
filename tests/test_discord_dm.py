"""A Discord DM question reads the channels of guilds that allow it where the asker can read now, and
none other: the real discord.py client against the fake Discord (guilds, roles, overwrites, member
lookups), a real Redis and a real ``phobos worker`` serving the extractive model.

Each document holds one fact; each probe asks for one document's fact from the DM. A document the asker
may read is cited with its channel's name; one they may not is never named in an answer, and its scope
is never in the job the adapter submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.discord.adapter import DiscordAdapter
from bot.discord.settings import DiscordSettings
from jobs import keys
from jobs.client import JobClient
from jobs.protocol import Job
from tests.conftest import RedisServer, WorkerProcess
from tests.fakes.fake_discord import (
    BOT_TOKEN,
    BOT_USER_ID,
    MANAGE_GUILD,
    READ_MESSAGE_HISTORY,
    VIEW_CHANNEL,
    FakeDiscord,
)
from tests.pdfs import pdf_with_pages
from tests.test_discord_adapter import finals, run

pytestmark = pytest.mark.discord

ALICE, OWNER = 1001, 1
FACTS = {
    "report.pdf": ("The Skerry Point lighthouse lens was made in 1872 in Birmingham.",
                   "When was the Skerry Point lighthouse lens made?"),
    "thread-notes.pdf": ("The apiary queens are marked with a blue dot of paint.",
                         "How are the apiary queens marked?"),
    "private-thread.pdf": ("The orchard cider press was rebuilt in 1998.",
                           "When was the orchard cider press rebuilt?"),
    "board.pdf": ("Mount Kessler last erupted in 1931 and its crater lake is turquoise.",
                  "When did Mount Kessler last erupt?"),
    "archive.pdf": ("The night train to Hallstatt leaves platform nine at 23:40.",
                    "When does the night train to Hallstatt leave?"),
    "ops.pdf": ("The ferry to Inishmore departs at seven from the harbour of Nuala.",
                "When does the ferry to Inishmore depart?"),
    "observatory.pdf": ("The Glenmore observatory telescope has a mirror of 2.5 metres.",
                  "How large is the Glenmore observatory telescope mirror?"),
}


@pytest.fixture(scope="module")
def worker_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    client = redis_server.client()
    worker = WorkerProcess(redis_server.url, "extractive", tmp_path_factory.mktemp("discord-dm") / "worker.log",
                           PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_CHUNK_TOKENS="60", PHOBOS_TOP_K="1")
    try:
        worker.wait_ready(client)
        yield redis_server.url
    finally:
        worker.stop()
        client.close()


@contextlib.asynccontextmanager
async def bot_with(redis_url: str, prepare: Callable[[FakeDiscord], Any]) -> AsyncIterator[
        tuple[FakeDiscord, DiscordAdapter, Any]]:
    """A fake Discord set up by ``prepare`` (guilds, members, overwrites) and the adapter logged in to it."""
    fake = FakeDiscord()
    world = prepare(fake)
    await fake.start()
    patch = pytest.MonkeyPatch()
    fake.patch_discord_py(patch)
    redis_client = aioredis.from_url(redis_url)
    settings = DiscordSettings(token=BOT_TOKEN, dev_guild_id=fake.guild_id, edit_interval_s=0.2)
    adapter = DiscordAdapter(settings, JobClient(redis_client, f"discord-dm-{uuid.uuid4().hex[:8]}"),
                             guild_ready_timeout=0.05)
    try:
        async with adapter:
            await adapter.login(BOT_TOKEN)
            connection = asyncio.create_task(adapter.connect(reconnect=False))
            await asyncio.wait_for(adapter.wait_until_ready(), timeout=10)
            yield fake, adapter, world
            await adapter.close()
            await connection
    finally:
        await fake.close()
        await redis_client.aclose()
        patch.undo()


def world(fake: FakeDiscord) -> dict[str, Any]:
    """Three guilds: acme (alice is staff; DM search to be turned on), beta (alice is not a member; on),
    gamma (alice reads everything; DM search stays off)."""
    acme = fake.ids(fake.add_guild("acme", ["finance", "board", "archive"], roles={"staff": VIEW_CHANNEL}))
    beta = fake.ids(fake.add_guild("beta", ["ops"]))
    gamma = fake.ids(fake.add_guild("gamma", ["notes"]))
    fake.join(acme["guild"], ALICE, [acme["staff"]])
    fake.join(gamma["guild"], ALICE)
    for guild in (acme, beta, gamma):
        fake.join(guild["guild"], OWNER)
    return {"acme": acme, "beta": beta, "gamma": gamma,
            "public_thread": fake.snowflake(), "private_thread": fake.snowflake()}


async def hide(fake: FakeDiscord, channel_id: int, guild_id: int, deny: int) -> None:
    """@everyone is denied ``deny`` in the channel; the bot keeps seeing it (a member overwrite)."""
    await fake.set_overwrite(channel_id, guild_id, deny=deny)
    await fake.set_overwrite(channel_id, BOT_USER_ID, allow=VIEW_CHANNEL | READ_MESSAGE_HISTORY, is_member=True)


async def upload(fake: FakeDiscord, channel_id: int, name: str) -> None:
    await fake.post_message("", channel_id=channel_id, author_id=OWNER, author_name="owner",
                            files=[(name, "application/pdf", pdf_with_pages([FACTS[name][0]]))])
    await fake.wait_for(lambda: any("Indexed" in m.content and name in m.content
                                    for m in fake.bot_messages(channel_id)), timeout_s=60)


async def set_dm_search(fake: FakeDiscord, channel_id: int, setting: str, permissions: int = MANAGE_GUILD) -> str:
    interaction = await fake.slash_command("dm-search", {"setting": setting}, channel_id=channel_id,
                                           user_id=OWNER, permissions=permissions)

    def answered() -> str:
        shown = [m.content for m in [interaction.original, *interaction.followups] if m is not None]
        shown += [c.get("data", {}).get("content", "") for c in interaction.callbacks]
        return next((text for text in shown if text and not text.startswith("⏳")), "")

    return str(await fake.wait_for(answered, timeout_s=60))


async def ask_in_dm(fake: FakeDiscord, adapter: DiscordAdapter, question: str) -> tuple[str, Job]:
    before = {m.id for m in fake.bot_messages(fake.dm_channel_id)}
    message = await fake.post_message(question, channel_id=fake.dm_channel_id, author_id=ALICE)

    def answer() -> str:
        fresh = [m for m in finals(fake, fake.dm_channel_id) if m.id not in before]
        return next((m.content for m in fresh if "Sources:" in m.content or "cover this" in m.content
                     or "No documents are shared" in m.content), "")

    text = str(await fake.wait_for(answer, timeout_s=60))
    entries = await adapter.jobs.redis.xrange(keys.JOBS_STREAM)
    job = next(j for j in (Job.from_json(f[b"job"]) for _id, f in entries) if j.id == f"discord:{message.id}")
    return text, job


def test_a_dm_reads_the_channels_the_asker_can_read_in_guilds_that_allow_it(
        worker_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    probes: dict[str, str] = {}

    async def scenario() -> None:
        async with bot_with(worker_url, world) as (fake, adapter, w):
            acme, beta, gamma = w["acme"], w["beta"], w["gamma"]
            await hide(fake, acme["board"], acme["guild"], deny=VIEW_CHANNEL)
            await hide(fake, acme["archive"], acme["guild"], deny=READ_MESSAGE_HISTORY)
            fake.add_thread(acme["finance"], w["public_thread"], "notes")
            fake.add_thread(acme["finance"], w["private_thread"], "private notes", is_private=True)
            await upload(fake, acme["finance"], "report.pdf")
            await upload(fake, w["public_thread"], "thread-notes.pdf")
            await upload(fake, w["private_thread"], "private-thread.pdf")
            await upload(fake, acme["board"], "board.pdf")
            await upload(fake, acme["archive"], "archive.pdf")
            await upload(fake, beta["ops"], "ops.pdf")
            await upload(fake, gamma["notes"], "observatory.pdf")

            # Off by default: nothing but the DM.
            text, job = await ask_in_dm(fake, adapter, FACTS["report.pdf"][1])
            assert job.reads == [] and "report.pdf" not in text
            probes["report.pdf, before any guild turned DM search on"] = text
            refused = await set_dm_search(fake, acme["finance"], "on", permissions=VIEW_CHANNEL)
            assert "Only members who can manage this server" in refused
            assert "now read" in await set_dm_search(fake, acme["finance"], "on")
            assert "now read" in await set_dm_search(fake, beta["ops"], "on")

            finance = f"discord:{acme['guild']}:{acme['finance']}"
            granted = {finance, f"{finance}:{w['public_thread']}"}
            for name, (_fact, question) in FACTS.items():
                text, job = await ask_in_dm(fake, adapter, question)
                probes[name] = text
                assert set(job.reads) == granted, job.reads
                assert job.channel_names == {finance: "finance"}
            assert "[1] #finance · report.pdf, p. 1" in probes["report.pdf"] and "1872" in probes["report.pdf"]
            assert "[1] #finance · thread-notes.pdf, p. 1" in probes["thread-notes.pdf"]
            for hidden in ("private-thread.pdf", "board.pdf", "archive.pdf", "ops.pdf", "observatory.pdf"):
                assert all(hidden not in text for text in probes.values()), hidden
            assert "1998" not in probes["private-thread.pdf"] and "1931" not in probes["board.pdf"]
            assert "23:40" not in probes["archive.pdf"] and "Inishmore" not in probes["ops.pdf"]
            assert "2.5 metres" not in probes["observatory.pdf"]

            # An overwrite now denies View Channel to alice's role: the next question no longer reads it.
            await fake.set_overwrite(acme["finance"], acme["staff"], deny=VIEW_CHANNEL)
            text, job = await ask_in_dm(fake, adapter, FACTS["report.pdf"][1])
            assert job.reads == [] and "report.pdf" not in text and "1872" not in text
            probes["report.pdf, after an overwrite denies View Channel to alice's role"] = text
            await fake.set_overwrite(acme["finance"], acme["staff"])  # the overwrite goes again
            assert set((await ask_in_dm(fake, adapter, FACTS["report.pdf"][1]))[1].reads) == granted
            fake.leave(acme["guild"], ALICE)  # removed from the guild
            text, job = await ask_in_dm(fake, adapter, FACTS["report.pdf"][1])
            assert job.reads == [] and "report.pdf" not in text
            probes["report.pdf, after alice left acme"] = text
            fake.join(acme["guild"], ALICE, [acme["staff"]])
            assert "no longer read" in await set_dm_search(fake, acme["finance"], "off")
            text, job = await ask_in_dm(fake, adapter, FACTS["report.pdf"][1])
            assert job.reads == [] and "report.pdf" not in text
            probes["report.pdf, after acme turned DM search off"] = text

    run(scenario())
    with capsys.disabled():  # the transcript for the closing note
        for name, text in probes.items():
            print(f"\n--- Discord DM probe: {name}\n{text}")


def test_each_dm_question_costs_one_member_lookup_per_allowing_guild_and_429s_are_waited_out(
        redis_server: RedisServer) -> None:
    """20 askers: 20 lookups in the one guild that allows DM search (none in the guild that does not),
    even past the fake's member bucket (here 5 a second: a burst), whose 429s discord.py waits out.
    At 20 questions a minute that is 20 lookups a minute per allowing guild (see bot/discord/dm_access.py)."""
    askers = [2000 + n for n in range(20)]

    def two_guilds(fake: FakeDiscord) -> dict[str, Any]:
        on = fake.ids(fake.add_guild("on", ["finance", "lobby"]))
        off = fake.ids(fake.add_guild("off", ["notes"]))
        for user in askers:
            fake.join(on["guild"], user)
            fake.join(off["guild"], user)
        fake.member_calls, fake.member_window_s = 5, 1.0
        return {"on": on, "off": off}

    async def scenario() -> None:
        async with bot_with(redis_server.url, two_guilds) as (fake, adapter, w):
            await adapter.jobs.redis.set(keys.dm_search("discord", str(w["on"]["guild"])), "on")
            for user in askers:
                reads = await adapter.dm_access.reads(user)
                assert sorted(reads.channel_names.values()) == ["finance", "lobby"]
            asked = fake.requests_to("GET", f"/guilds/{w['on']['guild']}/members/")
            refused = [r for r, code in fake.refused if r.path.startswith(f"/guilds/{w['on']['guild']}/members/")]
            assert len(asked) - len(refused) == len(askers)
            assert refused and fake.rate_limited == len(refused), "the burst met the bucket and waited"
            assert not fake.requests_to("GET", f"/guilds/{w['off']['guild']}/members/")

    run(scenario())
