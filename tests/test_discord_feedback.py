"""👍/👎 on Discord: the real discord.py client against the strict fake Discord, a real Redis and a real
worker that keeps question text; a click and the reason modal land in the interaction log."""

from __future__ import annotations

import pytest

from jobs.interactions import InteractionLog
from tests.fakes import fake_discord
from tests.fakes.fake_discord import FakeDiscord, FakeMessage
from tests.ratings import export_feedback, wait_for_rating
from tests.test_discord_adapter import finals, pdf_file, run, running_bot

pytestmark = pytest.mark.discord

QUESTION = "how long is the pump warranty?"


def buttons(message: FakeMessage) -> list[str]:
    return [b["custom_id"] for row in message.payload.get("components") or [] for b in row["components"]]


async def rated_answer(fake: FakeDiscord) -> FakeMessage:
    await fake.post_message("here is the manual", files=[pdf_file("manual.pdf")])
    await fake.wait_for(lambda: finals(fake, fake.channel_id, "✅"))
    question = await fake.post_message(QUESTION, mention_bot=True)
    return (await fake.wait_for(lambda: [m for m in finals(fake, question.id, "Sources:") if buttons(m)]))[0]


def test_a_thumbs_down_on_discord_with_a_reason_lands_in_the_log_and_is_exported(
        redis_server, redis_client, start_worker) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive", PHOBOS_LOG_TEXT="true")
    job_ids: list[str] = []

    async def scenario() -> None:
        async with running_bot(redis_server.url) as (fake, _adapter):
            answer = await rated_answer(fake)
            good, bad = buttons(answer)
            assert good.startswith("phobos:rate:good:") and bad.startswith("phobos:rate:bad:")
            job_ids.append(bad.removeprefix("phobos:rate:bad:"))

            click = await fake.click(answer, bad)
            await fake.wait_for(lambda: click.callbacks)
            assert click.callbacks[0]["type"] == fake_discord.MODAL
            assert click.modal is not None and click.modal["title"] == "What was wrong?"
            submitted = await fake.submit_modal(click, {"reason": "it cited the wrong manual"})
            await fake.wait_for(lambda: submitted.callbacks)
            assert submitted.callbacks[0]["data"]["flags"] == fake_discord.EPHEMERAL
    run(scenario())

    (job_id,) = job_ids
    wait_for_rating(redis_client, lambda r: r.reasons)
    (rated,) = InteractionLog(redis_client).rated_answers()
    assert rated.answer.job_id == job_id and rated.rating == "bad"
    assert len(rated.ratings) == 1, "the reason replaces the bare 👎 of the same person"

    _, (line,) = export_feedback(redis_server.url)
    assert line["id"] == job_id and line["question"] == QUESTION
    assert line["rating"] == "bad" and line["reasons"] == ["it cited the wrong manual"]
    assert line["doc"] == "manual.pdf" and line["pages"] == [1]


def test_a_thumbs_up_is_answered_privately_and_recorded(redis_server, redis_client, start_worker) -> None:
    start_worker("extractive", PHOBOS_DEFAULT_MODEL="extractive")

    async def scenario() -> None:
        async with running_bot(redis_server.url) as (fake, _adapter):
            answer = await rated_answer(fake)
            click = await fake.click(answer, buttons(answer)[0])
            await fake.wait_for(lambda: click.callbacks)
            assert click.callbacks[0]["type"] == fake_discord.CHANNEL_MESSAGE
            assert click.callbacks[0]["data"]["flags"] == fake_discord.EPHEMERAL
    run(scenario())
    wait_for_rating(redis_client, lambda r: r.rating == "good")
    (rated,) = InteractionLog(redis_client).rated_answers()
    assert rated.rating == "good" and not rated.reasons
