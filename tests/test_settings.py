import warnings
from pathlib import Path
from typing import Any, cast

import pytest

import bot.settings
from bot.discord.settings import DiscordSettings
from bot.slack.settings import SlackSettings
from core.embedders import choose_embedder
from core.env_settings import declared_fields, env_names
from core.ingest_settings import IngestSettings
from core.model_settings import ModelSettings
from core.retrieval_settings import RetrievalSettings
from jobs.settings import QueueSettings
from phobos.settings import Settings
from workers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    declared = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    names = set()
    for _section, name, field in declared_fields(Settings):
        if not name.startswith("deprecated_"):
            names.update(env_names(field))
    assert declared == names


def test_environment_overrides_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PHOBOS_TOP_K", "9")
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    monkeypatch.setenv("PHOBOS_STATE_DIR", str(tmp_path / "state"))
    settings = Settings()
    assert settings.retrieval.top_k == 9
    assert settings.redis_url.get_secret_value() == "redis://example:6379/0"
    assert settings.state_path == (tmp_path / "state").resolve() and settings.state_path.is_dir()
    assert settings.worker.served_models() == ["extractive", "smollm2-135m"]


def test_the_worker_section_reads_its_variables_by_their_names(monkeypatch) -> None:
    monkeypatch.setenv("PHOBOS_WORKER_CONCURRENCY", "4")
    monkeypatch.setenv("PHOBOS_CLAIMS", " Drop ")
    monkeypatch.setenv("PHOBOS_FETCH_MAX_MB", "1.5")
    monkeypatch.setenv("WORKER", "not json")  # a stray variable named like the section is not parsed
    settings = Settings()
    assert settings.worker.concurrency == 4 and settings.worker.claims == "drop"
    assert settings.worker.fetch_limits().max_bytes == 1_500_000
    assert WorkerSettings(default_model="echo", worker_id="w").default_model == "echo"  # by field name


def test_the_retrieval_ingest_models_and_queue_sections_read_their_variables_by_their_names(
        monkeypatch, tmp_path) -> None:
    token_file = tmp_path / "hf_token"
    token_file.write_text("hf_from_a_file\n")
    for name, value in {"PHOBOS_TOP_K": "8", "PHOBOS_MIN_RELEVANCE": " ", "PHOBOS_RERANKER": "subpassage",
                        "PHOBOS_MAX_UPLOAD_MB": "2.5", "PHOBOS_MAX_UNPACKED_MB": "3", "PHOBOS_CHUNK_TOKENS": "120",
                        "PHOBOS_CHUNK_OVERLAP_TOKENS": "10", "PHOBOS_INGEST_SLICE_PAGES": "4", "PHOBOS_OCR": "false",
                        "PHOBOS_SECTION_CONTEXT": "true", "PHOBOS_EMBEDDER": "mpnet", "PHOBOS_LAZY_EMBEDDER": "true",
                        "PHOBOS_LLM_THREADS": "3", "HF_TOKEN": "", "HF_TOKEN_FILE": str(token_file),
                        "OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "http://llm.example/v1",
                        "PHOBOS_JOB_DEADLINE_S": "60", "PHOBOS_RATE_BURST": "2", "PHOBOS_RATE_PER_MIN": "4",
                        "PHOBOS_MAX_QUEUE_DEPTH": "9", "PHOBOS_MAX_QUEUED_PER_USER": "1"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    retrieval = settings.retrieval
    assert (retrieval.top_k, retrieval.min_relevance, retrieval.reranker) == (8, None, "subpassage")
    # Empty means unset: the floor is the one calibrated for the embedder.
    assert retrieval.for_embedder("mpnet").min_relevance == choose_embedder("mpnet").min_relevance > 0
    limits = settings.ingest.limits()
    assert limits.max_bytes == 2_500_000 and limits.max_unpacked_bytes == 3_000_000
    assert (limits.chunk_tokens, limits.overlap_tokens, limits.slice_pages) == (120, 10, 4)
    assert limits.ocr is False and limits.section_context is True and limits.max_pages == 5000
    models = settings.models
    assert models.embedder == "mpnet" and models.lazy_embedder and models.llm_threads == 3
    assert models.hf_token.get_secret_value() == "hf_from_a_file"  # HF_TOKEN empty: its file is read
    credentials = models.credentials()
    assert credentials.openai_api_key == "sk-1" and credentials.openai_base_url == "http://llm.example/v1"
    assert settings.queue.job_deadline_s == 60.0
    admission = settings.queue.admission_limits()
    assert (admission.rate_burst, admission.rate_per_min, admission.max_queue_depth,
            admission.max_queued_per_user) == (2, 4.0, 9, 1)
    # Built by field name in tests and benches, as the other sections are.
    assert RetrievalSettings(top_k=3, min_relevance=0.4).for_embedder("minilm").min_relevance == 0.4
    engine = RetrievalSettings(top_k=3, min_relevance=0.4, reranker="").engine(cast(Any, None), cast(Any, None),
                                                                              history_tokens=7)
    assert (engine.top_k, engine.min_relevance, engine.history_tokens, engine.reranker) == (3, 0.4, 7, None)
    assert IngestSettings(max_upload_mb=1).limits().max_bytes == 1_000_000
    assert ModelSettings(embedder="minilm").embedder == "minilm"
    assert QueueSettings(rate_burst=0).admission_limits().rate_burst == 0


def test_sections_read_their_own_variables(monkeypatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("PHOBOS_SLACK_FILE_HOSTS", "files.slack.com, files.example.com")
    monkeypatch.setenv("PHOBOS_SLACK_MAX_FILE_MB", "12.5")
    monkeypatch.setenv("PHOBOS_DISCORD_ALLOWED_GUILDS", "1, 2")
    monkeypatch.setenv("PHOBOS_DISCORD_DEV_GUILD_ID", "")
    monkeypatch.setenv("PHOBOS_DISCORD_APPLICATION_ID", "77")
    monkeypatch.setenv("PHOBOS_METRICS_PORT", "9100")
    monkeypatch.setenv("PHOBOS_REPLY_TIMEOUT_S", "30")
    settings = Settings()
    assert settings.slack.bot_token.get_secret_value() == "xoxb-1"
    assert settings.slack.file_hosts == ("files.slack.com", "files.example.com")
    assert settings.slack.max_file_bytes == 12_500_000
    assert settings.discord.allowed_guild_ids == frozenset({1, 2})
    assert settings.discord.dev_guild_id is None and settings.discord.application_id == 77
    assert settings.telemetry.metrics_port == 9100
    assert settings.adapters.reply_timeout_s == settings.slack.reply_timeout_s == 30.0
    assert settings.cli.ask_timeout_s == 600.0  # the CLI's wait is not the adapters' give-up


def test_a_stray_variable_named_like_a_section_or_field_is_not_read(monkeypatch) -> None:
    """Only declared names are read: SLACK=foo is not parsed as the Slack section's JSON, MODE is not its mode."""
    for name, value in {"SLACK": "foo", "DISCORD": "{broken", "TELEMETRY": "x", "ADAPTERS": "[]", "CLI": "1",
                        "MODE": "http", "TOKEN": "stray", "OCR": "not-a-bool", "TOP_K": "x", "MODELS": "x",
                        "RETRIEVAL": "x", "INGEST": "{", "QUEUE": "[]", "EMBEDDER": "stray"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.slack.mode == "socket" and not settings.discord.token.get_secret_value()
    assert settings.ingest.ocr is True and settings.retrieval.top_k == 5


def test_sections_are_built_by_field_name_in_tests() -> None:
    slack = SlackSettings(bot_token="xoxb-1", mode="http", signing_secret="s", file_hosts=("127.0.0.1",))
    assert slack.file_hosts == ("127.0.0.1",) and slack.bot_token.get_secret_value() == "xoxb-1"
    slack.check_usable()
    with pytest.raises(ValueError, match="app-level token"):
        SlackSettings(bot_token="xoxb-1").check_usable()
    with pytest.raises(ValueError, match="SLACK_BOT_TOKEN"):
        SlackSettings().check_usable()
    assert DiscordSettings(token="t", dev_guild_id=5).dev_guild_id == 5


def test_discord_sizes_are_megabytes_of_a_million_bytes() -> None:
    assert DiscordSettings(max_attachment_mb=25).max_attachment_bytes == 25_000_000
    assert SlackSettings(max_file_mb=25).max_file_bytes == 25_000_000


def test_the_old_answer_timeout_name_still_sets_the_reply_timeout_once_warned(monkeypatch) -> None:
    monkeypatch.setenv("PHOBOS_ANSWER_TIMEOUT_S", "1200")
    monkeypatch.setattr(bot.settings, "_warned_about", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = Settings()
    assert settings.adapters.reply_timeout_s == settings.slack.reply_timeout_s == 1200.0
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and "PHOBOS_REPLY_TIMEOUT_S" in str(deprecations[0].message)
    monkeypatch.setenv("PHOBOS_REPLY_TIMEOUT_S", "60")  # the new name wins where both are set
    assert Settings().adapters.reply_timeout_s == 60.0
    assert "deprecated_answer_timeout_s" not in Settings().model_dump()["adapters"]


def test_a_dotenv_file_follows_the_same_rule(monkeypatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("SLACK=foo\nMODE=http\nPHOBOS_TOP_K=7\nPHOBOS_SLACK_HTTP_PORT=4000\n"
                                   "PHOBOS_DISCORD_ALLOWED_ROLES=3,4\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.retrieval.top_k == 7 and settings.slack.http_port == 4000 and settings.slack.mode == "socket"
    assert settings.discord.allowed_role_ids == frozenset({3, 4})
