"""The models' settings: one section (``settings.models``) for the embedder, the model registry and the
backends' credentials, read by phobos/runtime.py's loaders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, model_validator

from core.env_settings import EnvSection, env

if TYPE_CHECKING:
    from core.backends import BackendCredentials


class ModelSettings(EnvSection):
    # Embedder: a name in core/embedders.toml (minilm, mpnet, mpnet-hub), or a sentence-transformers
    # folder, hub id or package:MODULE/FOLDER. Changing it means sharing the documents again.
    embedder: str = Field("minilm", validation_alias=env("PHOBOS_EMBEDDER"))
    # The embedder the claim check compares an answer's sentences with its sources by (a name in
    # core/embedders.toml, with the check's thresholds calibrated for it); empty: the one above. mpnet: on
    # the held-out labels precision 0.863 and recall 0.936, against MiniLM's 0.824 and 0.894
    # (bench/claim_check.py); a median 0.48 s an answer against 0.09 s on 2 CPU cores, and 420 MB of memory.
    claim_embedder: str = Field("mpnet", validation_alias=env("PHOBOS_CLAIM_EMBEDDER"))
    # Embed in bfloat16 on CPUs that compute it natively (AVX512-BF16/AMX); ignored elsewhere.
    embed_bf16: bool = Field(True, validation_alias=env("PHOBOS_EMBED_BF16"))
    # Load the embedders at their first use rather than at start (quick worker restarts in tests); when false,
    # the claim check's and second stage's models load in the background once the worker is ready.
    lazy_embedder: bool = Field(False, validation_alias=env("PHOBOS_LAZY_EMBEDDER"))
    # Extra model registry entries (TOML, same shape as core/models.toml).
    models_file: Path | None = Field(None, validation_alias=env("PHOBOS_MODELS_FILE"))
    # CPU threads for llama.cpp; 0 means one per core.
    llm_threads: int = Field(0, validation_alias=env("PHOBOS_LLM_THREADS"))
    # Hugging Face token for gated models (Gemma, Llama 3).
    hf_token: SecretStr = Field(SecretStr(""), validation_alias=env("HF_TOKEN"))
    # A file holding that token (a mounted Docker or Kubernetes secret); read when HF_TOKEN is empty.
    hf_token_file: str = Field("", validation_alias=env("HF_TOKEN_FILE"))
    # OpenAI API key and an optional base URL for an OpenAI-compatible server.
    openai_api_key: SecretStr = Field(SecretStr(""), validation_alias=env("OPENAI_API_KEY"))
    openai_base_url: str = Field("", validation_alias=env("OPENAI_BASE_URL"))

    @model_validator(mode="after")
    def _read_secret_files(self) -> ModelSettings:
        if not self.hf_token.get_secret_value() and self.hf_token_file:
            self.hf_token = SecretStr(Path(self.hf_token_file).read_text().strip())
        return self

    def credentials(self) -> BackendCredentials:
        """What the model backends are handed: the secrets' values, here and nowhere else."""
        from core.backends import BackendCredentials

        return BackendCredentials(hf_token=self.hf_token.get_secret_value(),
                                  openai_api_key=self.openai_api_key.get_secret_value(),
                                  openai_base_url=self.openai_base_url, llm_threads=self.llm_threads)
