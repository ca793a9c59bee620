"""Every environment variable is declared by one settings section, listed in .env.example and in docs/settings.md.

The sections are found from phobos.settings.Settings itself (every field that is a settings class, and the
sections inside those), so a section composed there later is checked without changing this test.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic_settings import BaseSettings

from core.env_settings import env_names, section_fields
from phobos.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def sections(settings_cls: type[BaseSettings] = Settings) -> list[type[BaseSettings]]:
    """``settings_cls`` and every section composed into it, at any depth, each once."""
    found = [settings_cls]
    for section in section_fields(settings_cls).values():
        found += [s for s in sections(section) if s not in found]
    return found


def declarations() -> list[tuple[str, str, str]]:
    """``(variable, declaring class, field)`` for every variable, a field inherited by a section counted only
    where it is declared."""
    found = set()
    for section in sections():
        for name, field in section.model_fields.items():
            if name in section_fields(section):
                continue
            owner = next(c for c in reversed(section.__mro__) if name in getattr(c, "__annotations__", {}))
            found.update((var, f"{owner.__module__}.{owner.__qualname__}", name) for var in env_names(field))
    return sorted(found)


def documented() -> list[str]:
    text = (ROOT / "docs" / "settings.md").read_text()
    return re.findall(r"^\| `([A-Z0-9_]+)` \|", text, flags=re.MULTILINE)


def test_sections_are_found_generically() -> None:
    names = {s.__name__ for s in sections()}
    assert {"Settings", "SlackSettings", "DiscordSettings", "AdapterSettings", "TelemetrySettings"} <= names


def test_every_variable_is_declared_once() -> None:
    counts = Counter(var for var, _owner, _field in declarations())
    twice = {var: [d for d in declarations() if d[0] == var] for var, n in counts.items() if n > 1}
    assert not twice


def test_every_variable_is_in_env_example_and_documented_once() -> None:
    example = (ROOT / ".env.example").read_text()
    in_example = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    listed = Counter(documented())
    declared = {var for var, _owner, _field in declarations()}
    for var, _owner, field in declarations():
        assert listed[var] == 1, f"{var}: list it once in docs/settings.md"
        if not field.startswith("deprecated_"):  # a deprecated name is documented, not suggested
            assert var in in_example, f"{var}: add it to .env.example"
    assert set(listed) == declared, "docs/settings.md lists variables no section declares"


def test_section_aliases_are_names_nobody_sets() -> None:
    for section in sections():
        for name in section_fields(section):
            aliases = env_names(section.model_fields[name])
            assert aliases and all(alias.startswith("PHOBOS__") and alias.endswith("_SECTION") for alias in aliases)
