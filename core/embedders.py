"""The embedder registry: named embedders (core/embedders.toml), where their files are, and their floors."""

from __future__ import annotations

import logging
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core import package_files, split_wheels

log = logging.getLogger(__name__)

PACKAGED_EMBEDDERS = Path(__file__).with_name("embedders.toml")
DEFAULT_EMBEDDER = "minilm"
SPLIT_WHEELS_PREFIX = "split-wheels:"


@dataclass(frozen=True)
class EmbedderSpec:
    """One registry entry: where the sentence-transformers model is and what it is like."""

    name: str
    source: str
    dimension: int = 0
    max_tokens: int = 256
    min_relevance: float = 0.0  # the relevance floor calibrated for this embedder on the dev split
    min_unit_relevance: float = 0.0  # the floor for a passage's best sub-passage, likewise; 0: not used
    description: str = ""


def load_embedders(path: Path = PACKAGED_EMBEDDERS) -> dict[str, EmbedderSpec]:
    """Every entry of the registry file, by name."""
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    allowed = {f.name for f in fields(EmbedderSpec)} - {"name"}
    specs = {}
    for name, entry in data.get("embedders", {}).items():
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"{path}: embedder {name!r} has unknown keys {sorted(unknown)}")
        specs[name] = EmbedderSpec(name=name, **entry)
    return specs


def choose_embedder(choice: str, registry: dict[str, EmbedderSpec] | None = None) -> EmbedderSpec:
    """The entry named ``choice``; any other string is a folder, hub id or package path of its own,
    with no calibrated floor (0.0: every passage counts until PHOBOS_MIN_RELEVANCE says otherwise)."""
    specs = load_embedders() if registry is None else registry
    name = choice.strip() or DEFAULT_EMBEDDER
    if name in specs:
        return specs[name]
    for spec in specs.values():  # the old way of naming the default: its package path
        if spec.source == name:
            return spec
    return EmbedderSpec(name=name, source=name)


def model_location(source: str, cache_dir: Path) -> str:
    """A folder or hub id sentence-transformers can load: package paths resolved, split archives
    reassembled once into ``cache_dir``."""
    if source.startswith(SPLIT_WHEELS_PREFIX):
        return str(reassemble_split_wheels(source[len(SPLIT_WHEELS_PREFIX):], cache_dir))
    return package_files.resolve(source)


def reassemble_split_wheels(spec: str, cache_dir: Path) -> Path:
    """``DIST-PREFIX/ARCHIVE``: join ARCHIVE.001, .002, ... found in the installed distributions
    DIST-PREFIX-001, -002, ... and unpack the zip into ``cache_dir``; the model folder inside it.

    Done once: a later call finds the unpacked folder. The unpacking goes to a temporary folder first,
    so an interrupted run never leaves a half-written model behind.
    """
    prefix, _, archive = spec.partition("/")
    target = cache_dir / archive.removesuffix(".zip")
    if (target / "modules.json").exists() or (target / "config.json").exists():
        return target
    parts = _archive_parts(prefix, archive)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        joined = split_wheels.join(parts, Path(work) / archive)
        unpacked = Path(work) / "unpacked"
        with zipfile.ZipFile(joined) as zipped:
            zipped.extractall(unpacked)
        folders = [p.parent for p in unpacked.rglob("config.json") if (p.parent / "modules.json").exists()]
        if not folders:
            raise FileNotFoundError(f"{archive} holds no sentence-transformers folder")
        folders[0].rename(target)
    log.info("unpacked %s from %d wheels into %s", archive, len(parts), target)
    return target


def _archive_parts(prefix: str, archive: str) -> list[Path]:
    try:
        return split_wheels.installed_parts(f"{prefix}-{{n:03d}}", f"{archive}.{{n:03d}}")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"the wheels {prefix}-001... holding {archive} are not all installed "
                                f"({exc}); pip install them first") from None
