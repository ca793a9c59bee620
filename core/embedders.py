"""The embedder registry: named embedders (core/embedders.toml), where their files are, and their floors."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core import package_files, split_wheels
from core.claims import ClaimThresholds

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
    # The claim check's thresholds with this embedder (core.claims.ClaimThresholds), calibrated on the dev
    # labels by bench/claim_check.py --calibrate; 0: the check's own defaults (calibrated for MiniLM).
    claim_min_similarity: float = 0.0
    claim_min_coverage: float = 0.0
    claim_paraphrase_similarity: float = 0.0
    # A split-wheels archive from a publisher we do not know: its joined bytes must have this sha256
    # and size, or it is refused (core/split_wheels.py).
    sha256: str = ""
    size_bytes: int = 0
    description: str = ""

    def claim_thresholds(self) -> ClaimThresholds:
        """The claim check's thresholds calibrated for this embedder; the check's defaults where not set."""
        calibrated = {"min_similarity": self.claim_min_similarity, "min_coverage": self.claim_min_coverage,
                      "paraphrase_similarity": self.claim_paraphrase_similarity}
        return dataclasses.replace(ClaimThresholds(), **{k: v for k, v in calibrated.items() if v})


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


def model_location(source: str, cache_dir: Path, sha256: str = "", size_bytes: int = 0) -> str:
    """A folder or hub id sentence-transformers can load: package paths resolved, split archives
    reassembled once into ``cache_dir`` (refused unless their bytes match ``sha256`` when it is pinned)."""
    if source.startswith(SPLIT_WHEELS_PREFIX):
        return str(reassemble_split_wheels(source[len(SPLIT_WHEELS_PREFIX):], cache_dir, sha256, size_bytes))
    return package_files.resolve(source)


def spec_location(spec: EmbedderSpec, cache_dir: Path) -> str:
    """Where the entry's model is, as :func:`model_location` finds it, with the entry's pinned checksum."""
    return model_location(spec.source, cache_dir, spec.sha256, spec.size_bytes)


UNPACKED_STAMP = ".sha256"  # in an unpacked folder: the checksum its archive was checked against


def reassemble_split_wheels(spec: str, cache_dir: Path, sha256: str = "", size_bytes: int = 0) -> Path:
    """``DIST-PREFIX/ARCHIVE``: join ARCHIVE.001, .002, ... found in the installed distributions
    DIST-PREFIX-001, -002, ... and unpack the zip into ``cache_dir``; the model folder inside it.

    Done once: a later call finds the unpacked folder (with ``sha256`` pinned, only one unpacked from an
    archive checked against it). The unpacking goes to a temporary folder first, so an interrupted run
    never leaves a half-written model behind.
    """
    prefix, _, archive = spec.partition("/")
    target = cache_dir / archive.removesuffix(".zip")
    stamp = target / UNPACKED_STAMP
    if (target / "modules.json").exists() or (target / "config.json").exists():
        if not sha256 or (stamp.exists() and stamp.read_text().strip() == sha256):
            return target
        shutil.rmtree(target)  # unpacked before its checksum was pinned, or from other bytes: again, checked
    parts = _archive_parts(prefix, archive)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        joined = split_wheels.join(parts, Path(work) / archive, sha256, size_bytes)
        unpacked = Path(work) / "unpacked"
        with zipfile.ZipFile(joined) as zipped:
            zipped.extractall(unpacked)
        folders = [p.parent for p in unpacked.rglob("config.json") if (p.parent / "modules.json").exists()]
        if not folders:
            raise FileNotFoundError(f"{archive} holds no sentence-transformers folder")
        if sha256:
            (folders[0] / UNPACKED_STAMP).write_text(sha256 + "\n")
        folders[0].rename(target)
    log.info("unpacked %s from %d wheels into %s", archive, len(parts), target)
    return target


def _archive_parts(prefix: str, archive: str) -> list[Path]:
    try:
        return split_wheels.installed_parts(f"{prefix}-{{n:03d}}", f"{archive}.{{n:03d}}")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"the wheels {prefix}-001... holding {archive} are not all installed "
                                f"({exc}); pip install them first") from None
