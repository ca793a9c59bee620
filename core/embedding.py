"""The Embedder port and its sentence-transformers implementation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core import package_files

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from core.serving.embed_batcher import EmbedCoalescer

log = logging.getLogger(__name__)

SPECIAL_TOKENS_PER_TEXT = 2  # [CLS] and [SEP] take room in the embedder's window
GPU_MEMORY_SHARE = 0.25  # of the free GPU memory, what one embedding batch's activations may take
GPU_BATCH_LIMITS = (32, 1024)  # texts per GPU batch: below, launches dominate; above, nothing gains


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

    def __init__(self, location: str, device: str | None = None, batch_size: int = 16, bf16: bool = False,
                 name: str | None = None):
        from sentence_transformers import SentenceTransformer

        path = package_files.resolve(location)
        self.name = name or location  # what stored documents record as their embedder
        self._model: SentenceTransformer = SentenceTransformer(path, device=device)
        self.batch_size = batch_size
        # bfloat16 matmuls on a CPU that has them natively: about 1.3-1.5x faster on 2 cores, vectors
        # within 1e-4 cosine of float32 (bench/ingest_throughput.py). Elsewhere it would be slower.
        self.uses_bf16 = bf16 and str(self._model.device) == "cpu" and cpu_has_native_bf16()
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim or 0)
        self.max_tokens = int(self._model.max_seq_length or 256) - SPECIAL_TOKENS_PER_TEXT
        self._coalescer: EmbedCoalescer | None = None
        if self._model.device.type == "cuda":
            # fp16 halves the memory traffic and runs on tensor cores; unit vectors differ from fp32 by ~1e-3
            self._model.half()
            self.batch_size = gpu_batch_size(self._model, self.max_tokens + SPECIAL_TOKENS_PER_TEXT)
            from core.serving.embed_batcher import EmbedCoalescer

            self._coalescer = EmbedCoalescer(self._encode)
        log.info("embedder %s loaded on %s: %d dimensions, %d tokens per text, batches of %d", path,
                 self._model.device, self.dim, self.max_tokens, self.batch_size)

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._model.tokenizer(texts, add_special_tokens=False, truncation=False,
                                        return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._coalescer is not None:  # on a GPU, concurrent asks' queries go in one batch
            return self._coalescer.embed(texts)
        return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        # encode() sorts by length internally, which cuts padding inside each batch.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.uses_bf16):
            vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def gpu_batch_size(model: SentenceTransformer, seq_tokens: int) -> int:
    """Texts per fp16 batch on the model's GPU, from the memory free there now."""
    import torch

    config: Any = next(m.config for m in model.modules() if hasattr(getattr(m, "config", None), "intermediate_size"))
    free, _ = torch.cuda.mem_get_info(model.device)
    return batch_size_for_memory(free, seq_tokens, config.intermediate_size, config.num_attention_heads)


def batch_size_for_memory(free_bytes: int, seq_tokens: int, intermediate: int, heads: int) -> int:
    """Texts per fp16 batch that fit ``GPU_MEMORY_SHARE`` of ``free_bytes`` at full length.

    Per text, the widest activations are the feed-forward layer's (tokens x intermediate) and the
    attention scores (heads x tokens x tokens), in 2-byte halves; x4 covers what lives beside them.
    """
    per_text = 4 * 2 * seq_tokens * (intermediate + heads * seq_tokens)
    low, high = GPU_BATCH_LIMITS
    return int(min(high, max(low, free_bytes * GPU_MEMORY_SHARE // per_text)))


def cpu_has_native_bf16() -> bool:
    """The CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); Linux only, False elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
