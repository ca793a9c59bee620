"""The layout's rules (docs/architecture.md), checked on every module with ``ast``: no import runs up the
layers, core/ imports no Redis and no chat SDK, and no module outside bench/ and tests/ is over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the packages of ours it may import (itself included): core <- jobs <- telemetry <- workers/bot <- phobos
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "jobs": frozenset({"core", "jobs"}),
    "telemetry": frozenset({"core", "jobs", "telemetry"}),
    "workers": frozenset({"core", "jobs", "telemetry", "workers"}),
    "bot": frozenset({"core", "jobs", "telemetry", "bot"}),
    "phobos": frozenset({"core", "jobs", "telemetry", "workers", "bot", "phobos"}),
}
# core/ is plain Python: no Redis, no chat platform, no metrics or HTTP client library.
CORE_MUST_NOT_IMPORT = frozenset({"redis", "slack_sdk", "slack_bolt", "discord", "prometheus_client", "aiohttp",
                                  "openai"})
# A model backend may import its own model's library: the OpenAI-compatible backend imports openai (lazily).
CORE_EXCEPTIONS = {"core/backends/openai_backend.py": frozenset({"openai"})}

MAX_LINES = 400
SKIPPED_DIRS = {"bench", "tests", "build", "deploy", "docs"}


def _modules() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in SKIPPED_DIRS or parts[0].startswith(".") or any(p.startswith(".venv") for p in parts):
            continue
        found.append(path)
    return found


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


MODULES = _modules()
LAYERED = [p for p in MODULES if p.relative_to(ROOT).parts[0] in MAY_IMPORT]


def imported(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at any depth (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_every_package_is_checked() -> None:
    assert {p.relative_to(ROOT).parts[0] for p in LAYERED} == set(MAY_IMPORT)
    assert len(LAYERED) > 50


@pytest.mark.parametrize("path", LAYERED, ids=_name)
def test_no_import_runs_up_the_layers(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    ours = {name.split(".")[0] for name in imported(path)} & set(MAY_IMPORT)
    assert ours <= MAY_IMPORT[package], f"{_name(path)} imports {sorted(ours - MAY_IMPORT[package])} above {package}"


@pytest.mark.parametrize("path", [p for p in LAYERED if p.relative_to(ROOT).parts[0] == "core"], ids=_name)
def test_core_imports_no_redis_and_no_sdk(path: Path) -> None:
    allowed = CORE_EXCEPTIONS.get(_name(path), frozenset())
    found = {name.split(".")[0] for name in imported(path)} & (CORE_MUST_NOT_IMPORT - allowed)
    assert not found, f"{_name(path)} imports {sorted(found)}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from workers.worker import Worker\n    import redis.asyncio\n")
    assert imported(module) == {"workers.worker", "redis.asyncio"}


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines"


KEY_SPELLERS = {"jobs/keys.py", "bot/discord/feedback.py"}  # the keys; Discord's button custom ids (not keys)


@pytest.mark.parametrize("path", [p for p in LAYERED if _name(p) not in KEY_SPELLERS], ids=_name)
def test_redis_keys_are_spelled_only_in_jobs_keys(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    literals = [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("phobos:")]
    assert not literals, f"{_name(path)} spells {literals}: name them in jobs/keys.py"
