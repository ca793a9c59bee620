"""The CLI stays thin: phobos/cli.py parses and dispatches, the commands live in phobos/commands/."""

from __future__ import annotations

import argparse
from pathlib import Path

from phobos import cli

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 300


def test_every_command_runs_from_phobos_commands() -> None:
    parser = cli._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in commands.choices.items():
        func = subparser.get_default("func")
        assert func.__module__.startswith("phobos.commands."), f"phobos {name} runs {func.__module__}"


def test_cli_and_command_modules_are_short() -> None:
    modules = [ROOT / "phobos" / "cli.py", *sorted((ROOT / "phobos" / "commands").glob("*.py")),
               ROOT / "workers" / "local_ingest.py", ROOT / "workers" / "local_search.py"]
    long = {m.name: n for m in modules if (n := len(m.read_text().splitlines())) > MAX_LINES}
    assert not long
