"""Discord's app surfaces: installable to users as well as guilds, the "Ask Phobos" message command,
and rating buttons on every answer; the real discord.py client against the fake Discord, which
delivers a command only where Discord would offer it (its contexts and integration types)."""

from __future__ import annotations

import pytest

from bot.discord.feedback import RATE_PREFIX
from tests.fakes import fake_discord
from tests.fakes.fake_discord import CONTEXT_PRIVATE_CHANNEL, MESSAGE_COMMAND, USER_INSTALL, FakeInteraction
from tests.test_discord_adapter import NO_DOCUMENTS, is_final, pdf_file, run, running_bot, worker_url

pytestmark = pytest.mark.discord
__all__ = ["worker_url"]  # the module's worker, shared with test_discord_adapter's fixture


def buttons(interaction: FakeInteraction) -> list[str]:
    """The custom_ids of the buttons on the interaction's answer (its original response)."""
    message = interaction.original
    assert message is not None
    return [b["custom_id"] for row in message.payload.get("components") or [] for b in row["components"]]


def answered(interaction: FakeInteraction, containing: str) -> bool:
    message = interaction.original
    return message is not None and is_final(message) and containing in message.content


def test_every_command_is_installable_to_users_and_usable_in_dms(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            path = f"/applications/{fake_discord.APPLICATION_ID}/guilds/{fake.guild_id}/commands"
            synced = fake.synced_commands[path]
            assert all(sorted(c["integration_types"]) == [0, 1] for c in synced), synced
            assert all(sorted(c["contexts"]) == [0, 1, 2] for c in synced), synced
            (menu,) = [c for c in synced if c.get("type") == MESSAGE_COMMAND]
            assert menu["name"] == "Ask Phobos"
    run(scenario())


def test_ask_phobos_on_a_message_with_a_pdf_shares_it_and_answers_with_sources_and_buttons(
        worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            target = await fake.post_message("how long is the pump warranty?", author_id=1002,
                                             files=[pdf_file("pump.pdf")])
            interaction = await fake.message_command(target)
            await fake.wait_for(lambda: answered(interaction, "Sources:"), timeout_s=60)
            assert interaction.callbacks[0]["type"] == fake_discord.DEFERRED_CHANNEL_MESSAGE
            assert interaction.original is not None
            assert "24 months" in interaction.original.content and "pump.pdf" in interaction.original.content
            assert [b.split(":")[2] for b in buttons(interaction)] == ["good", "bad"]
            assert all(b.startswith(RATE_PREFIX) for b in buttons(interaction))
    run(scenario())


def test_a_user_install_answers_in_a_group_dm_through_the_interaction_only(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            group_dm = fake.private_channel()
            interaction = await fake.slash_command("ask", {"question": "anything?"}, channel_id=group_dm,
                                                   context=CONTEXT_PRIVATE_CHANNEL, install=USER_INSTALL)
            await fake.wait_for(lambda: answered(interaction, NO_DOCUMENTS), timeout_s=60)
            assert buttons(interaction), "the answer carries 👍/👎 there too"
            assert not [m for m in fake.bot_messages(group_dm) if m is not interaction.original]
            assert not fake.refused, "nothing was tried where the bot may not post"
            # The message command works there as well, on a message the bot never saw.
            target = fake.message_in(group_dm, "what is this about?")
            asked = await fake.message_command(target, context=CONTEXT_PRIVATE_CHANNEL, install=USER_INSTALL)
            await fake.wait_for(lambda: answered(asked, NO_DOCUMENTS), timeout_s=60)
    run(scenario())


def test_a_message_with_nothing_to_ask_is_refused_privately(worker_url: str) -> None:
    async def scenario() -> None:
        async with running_bot(worker_url) as (fake, _adapter):
            target = fake.message_in(fake.channel_id, "")
            interaction = await fake.message_command(target)
            await fake.wait_for(lambda: interaction.callbacks)
            callback = interaction.callbacks[0]
            assert callback["type"] == fake_discord.CHANNEL_MESSAGE and callback["data"]["flags"] & 64
            assert "no question" in callback["data"]["content"]
    run(scenario())


def test_a_dm_with_phobos_shares_a_pdf_then_streams_a_rated_answer(worker_url: str) -> None:
    async def scenario() -> list[str]:
        async with running_bot(worker_url) as (fake, _adapter):
            dm = fake.dm_channel_id
            await fake.post_message("the manual", channel_id=dm, files=[pdf_file("pump.pdf")])
            await fake.wait_for(lambda: any("✅" in m.content for m in fake.bot_messages(dm)), timeout_s=60)
            await fake.post_message("how long is the pump warranty?", channel_id=dm)
            await fake.wait_for(lambda: any(is_final(m) and "Sources:" in m.content for m in fake.bot_messages(dm)),
                                timeout_s=60)
            (answer,) = [m for m in fake.bot_messages(dm) if "Sources:" in m.content]
            assert [b["custom_id"].split(":")[2] for row in answer.payload["components"]
                    for b in row["components"]] == ["good", "bad"]
            return [f"[{'edit' if n else 'post'}] {text}" for m in fake.bot_messages(dm)
                    for n, text in enumerate(m.history)]

    transcript: list[str] = []

    async def recorded() -> None:
        transcript.extend(await scenario())

    run(recorded())
    print("\n".join(transcript))
    assert any("24 months" in line for line in transcript)
