"""The Embedder port and its sentence-transformers implementation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core import package_files

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

SPECIAL_TOKENS_PER_TEXT = 2  # [CLS] and [SEP] take room in the embedder's window


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int  # content tokens one text may have without being truncated

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Content tokens per text, as the embedder's own tokenizer counts them."""
        ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim)."""
        ...


class SentenceTransformerEmbedder:
    """Batched sentence-transformers encoding; normalised so a dot product is the cosine similarity."""

    def __init__(self, location: str, device: str | None = None, batch_size: int = 16, bf16: bool = False):
        from sentence_transformers import SentenceTransformer

        path = package_files.resolve(location)
        self.name = location
        self._model: SentenceTransformer = SentenceTransformer(path, device=device)
        self.batch_size = batch_size
        # bfloat16 matmuls on a CPU that has them natively: about 1.3-1.5x faster on 2 cores, vectors
        # within 1e-4 cosine of float32 (bench/ingest_throughput.py). Elsewhere it would be slower.
        self.uses_bf16 = bf16 and str(self._model.device) == "cpu" and cpu_has_native_bf16()
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim or 0)
        self.max_tokens = int(self._model.max_seq_length or 256) - SPECIAL_TOKENS_PER_TEXT
        log.info("embedder %s loaded: %d dimensions, %d tokens per text", path, self.dim, self.max_tokens)

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._model.tokenizer(texts, add_special_tokens=False, truncation=False,
                                        return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        # encode() sorts by length internally, which cuts padding inside each batch.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.uses_bf16):
            vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def cpu_has_native_bf16() -> bool:
    """The CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); Linux only, False elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
