"""Secrets stay out of reprs, printed URLs and the dead-letter stream."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from bot.discord.settings import DiscordSettings
from bot.slack.settings import SlackSettings
from core.backends import BackendCredentials
from core.scope import Scope
from jobs import keys
from jobs.protocol import Job, JobKind, ReplyEvent
from phobos.runtime import masked_url
from phobos.settings import Settings
from tests.conftest import ROOT, phobos_env
from workers import deadletter
from workers.delivery import JobQueue

SECRETS = {"SLACK_BOT_TOKEN": "xoxb-secret-1", "SLACK_APP_TOKEN": "xapp-secret-2",
           "SLACK_SIGNING_SECRET": "signing-secret-3", "DISCORD_TOKEN": "discord-secret-4",
           "HF_TOKEN": "hf_secret5", "OPENAI_API_KEY": "sk-secret-6",
           "REDIS_URL": "redis://phobos:redis-secret-7@localhost:6379/0"}


def test_settings_reprs_show_no_secret(monkeypatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    assert not [value for value in SECRETS.values() if value in shown]
    assert settings.slack.bot_token.get_secret_value() == "xoxb-secret-1"  # there for the code that needs it
    others = repr(SlackSettings(bot_token="xoxb-secret-1", app_token="xapp-secret-2",
                                signing_secret="signing-secret-3"))
    others += repr(DiscordSettings(token="discord-secret-4"))
    others += repr(BackendCredentials(hf_token="hf_secret5", openai_api_key="sk-secret-6"))
    assert not [value for value in SECRETS.values() if value in others]


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://user:p%40ss@redis.example:6380", "rediss://user:***@redis.example:6380"),
    ("redis://host:6379/0?password=pw&db=1", "redis://host:6379/0?password=***&db=1"),
    ("redis://host:6379", "redis://host:6379"),
    ("unix://user:pw@/run/redis.sock?db=0", "unix://user:***@/run/redis.sock?db=0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_masked_url_hides_only_the_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


@pytest.fixture
def password_url(redis_server, redis_client):  # type: ignore[no-untyped-def]
    """The test server's URL for an ACL user with a password."""
    redis_client.execute_command("ACL", "SETUSER", "phobos-test", "on", ">redis-secret-7", "~*", "&*", "+@all")
    scheme, _, rest = redis_server.url.partition("://")
    yield f"{scheme}://phobos-test:redis-secret-7@{rest}"
    redis_client.execute_command("ACL", "DELUSER", "phobos-test")


def test_phobos_status_prints_redis_url_with_the_password_masked(password_url: str) -> None:
    status = subprocess.run([sys.executable, "-m", "phobos", "status"], env=phobos_env(password_url), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "redis-secret-7" not in status.stdout + status.stderr
    assert f"Redis: {password_url.replace('redis-secret-7', '***')}\n" in status.stdout


def test_phobos_up_prints_redis_url_with_the_password_masked(password_url: str) -> None:
    env = phobos_env(password_url, PHOBOS_WORKER_MODELS="extractive", PHOBOS_DEFAULT_MODEL="extractive",
                     PHOBOS_LAZY_EMBEDDER="1")
    up = subprocess.Popen([sys.executable, "-m", "phobos", "up", "--no-console"], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, up.kill)  # a hung start fails the test below rather than the suite
    watchdog.start()
    seen = []
    try:
        assert up.stderr is not None
        for line in up.stderr:
            seen.append(line)
            if "Phobos is ready" in line:
                break
    finally:
        up.terminate()
        up.wait(timeout=60)
        watchdog.cancel()
    ready = [line for line in seen if "Phobos is ready" in line]
    assert ready and f"Redis: {password_url.replace('redis-secret-7', '***')})" in ready[0], "".join(seen)[-3000:]
    assert "redis-secret-7" not in "".join(seen)


def test_a_dead_letter_keeps_no_response_url_but_the_user_is_still_told(redis_client) -> None:
    queue = JobQueue(redis_client, "w", reclaim_idle_s=30)
    queue.ensure_group()
    meta = {"via": "response_url", "channel": "C1", "response_url": "https://hooks.slack.test/commands/T1/secret"}
    dead = Job("slack:ev1", JobKind.ASK, Scope("slack", "T1", "C1"), "slack:T1:U1", keys.reply_stream("a"),
               text="why?", meta=meta)
    redis_client.xadd(keys.JOBS_STREAM, {"job": dead.to_json()})
    held = queue.take(100)
    assert held is not None
    record = deadletter.dead_record(held.fields[b"job"].decode(), held.entry_id, 4, "max deliveries")
    assert queue.finish(held, dead.sender_key, dead.reply_to, deadletter.failure_event(dead, 4).to_json(), record)
    stored = b"".join(value for _, fields in redis_client.xrange(keys.DEAD_STREAM) for value in fields.values())
    assert b"hooks.slack.test" not in stored
    (entry,) = deadletter.list_dead(redis_client)
    kept = entry.job()
    assert kept is not None and kept.meta == {"via": "response_url", "channel": "C1"} and kept.text == "why?"
    (_, fields), = redis_client.xrange(keys.reply_stream("a"))
    assert ReplyEvent.from_json(fields[b"event"]).meta["response_url"] == meta["response_url"]
