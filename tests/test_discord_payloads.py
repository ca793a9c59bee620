"""Pure translations of the Discord adapter: scopes, questions, job ids, allow-lists, the invite URL."""

from __future__ import annotations

import urllib.parse

import pytest

from bot.discord.payloads import (
    Gate,
    attachment_job_id,
    make_job,
    message_job_id,
    question_of,
    thread_name,
    thread_scope_for,
)
from bot.discord.settings import intents, invite_url, permissions
from core.scope import Scope
from jobs import keys
from jobs.protocol import JobKind

pytestmark = pytest.mark.discord

BOT_ID = 42


def test_question_drops_only_the_bot_mention() -> None:
    assert question_of(f"<@{BOT_ID}>  what is   the <@7> deadline?", BOT_ID) == "what is the <@7> deadline?"
    assert question_of(f"<@!{BOT_ID}>", BOT_ID) == ""


def test_a_question_at_channel_level_belongs_to_the_thread_it_opens() -> None:
    channel = Scope("discord", "1", "2")
    thread = thread_scope_for(99, channel)
    assert thread == Scope("discord", "1", "2", "99")
    assert thread.search_keys() == ["discord:1:2:99", "discord:1:2"]


def test_job_ids_follow_the_discord_event_so_redelivery_is_one_job() -> None:
    assert message_job_id(5) == "discord:5"
    assert attachment_job_id(5, 6) == "discord:5:6"
    job = make_job(attachment_job_id(5, 6), JobKind.INGEST, Scope("discord", "1", "2"), 3, "replies",
                   file_name="a.pdf", channel_id=2, message_id=5)
    assert job.blob_key == keys.BLOB_PREFIX + "discord:5:6"
    # kind and scope too: a reply re-shown after an adapter restart keeps its buttons and source links
    assert job.meta == {"channel_id": "2", "message_id": "5", "kind": "ingest", "scope": "discord:1:2"}
    ask = make_job("discord:9", JobKind.ASK, Scope("discord", "1", "2"), 3, "r", channel_id=2)
    assert ask.blob_key is None


def test_thread_names_fit_discords_limit() -> None:
    assert thread_name("  ") == "Question"
    assert len(thread_name("x" * 500)) == 100


@pytest.mark.parametrize(("gate", "guild", "channel", "roles", "admitted"), [
    (Gate(), 1, 2, [], True),
    (Gate(allow_dms=False), None, 2, [], False),
    (Gate(guild_ids=frozenset({1})), 3, 2, [], False),
    (Gate(channel_ids=frozenset({2})), 1, 2, [], True),
    (Gate(channel_ids=frozenset({2})), 1, 5, [], False),
    (Gate(role_ids=frozenset({8})), 1, 2, [7], False),
    (Gate(role_ids=frozenset({8})), 1, 2, [7, 8], True),
])
def test_allow_lists(gate: Gate, guild: int | None, channel: int, roles: list[int], admitted: bool) -> None:
    assert gate.admits(guild, channel, roles) is admitted


def test_invite_url_asks_for_bot_and_commands_with_the_needed_permissions() -> None:
    query = urllib.parse.parse_qs(urllib.parse.urlparse(invite_url(123)).query)
    assert query["client_id"] == ["123"]
    assert query["scope"] == ["bot applications.commands"]
    granted = permissions()
    assert int(query["permissions"][0]) == granted.value
    assert granted.send_messages_in_threads and granted.create_public_threads and granted.read_message_history
    assert not granted.attach_files and not granted.mention_everyone and not granted.administrator
    assert intents().message_content and intents().dm_messages and not intents().members
