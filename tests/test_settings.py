from pathlib import Path

from phobos.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    declared = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    names = set()
    for field in Settings.model_fields.values():
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
    assert settings.served_models() == ["smollm2-135m", "extractive"]
