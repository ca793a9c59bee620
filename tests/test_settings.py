from pathlib import Path

from phobos.settings import Settings
from workers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    declared = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    names = set()
    sections = [Settings, WorkerSettings]  # Settings composes each component's section (settings.worker)
    for section in sections:
        for field in section.model_fields.values():
            if isinstance(field.annotation, type) and field.annotation in sections:
                continue  # the section itself (an alias nobody sets), not a variable
            alias = field.validation_alias
            names.update(alias.choices if hasattr(alias, "choices") else [alias])  # type: ignore[union-attr]
    assert declared == names


def test_environment_overrides_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PHOBOS_TOP_K", "9")
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    monkeypatch.setenv("PHOBOS_STATE_DIR", str(tmp_path / "state"))
    settings = Settings()
    assert settings.top_k == 9
    assert settings.redis_url.get_secret_value() == "redis://example:6379/0"
    assert settings.state_path == (tmp_path / "state").resolve() and settings.state_path.is_dir()
    assert settings.worker.served_models() == ["smollm2-135m", "extractive"]


def test_the_worker_section_reads_its_variables_by_their_names(monkeypatch) -> None:
    monkeypatch.setenv("PHOBOS_WORKER_CONCURRENCY", "4")
    monkeypatch.setenv("PHOBOS_CLAIMS", " Drop ")
    monkeypatch.setenv("PHOBOS_FETCH_MAX_MB", "1.5")
    monkeypatch.setenv("WORKER", "not json")  # a stray variable named like the section is not parsed
    settings = Settings()
    assert settings.worker.concurrency == 4 and settings.worker.claims == "drop"
    assert settings.worker.fetch_limits().max_bytes == 1_500_000
    assert WorkerSettings(default_model="echo", worker_id="w").default_model == "echo"  # by field name
