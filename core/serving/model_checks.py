"""Checks at engine start: can the batched engine serve this model, and how many requests fit in memory.

A model the engine cannot serve raises ``EngineUnavailable``; its caller falls back to answering one
request at a time with a plain ``generate``.
"""

from __future__ import annotations

import logging
from typing import Any

from core.serving.forwards import SlotForwards

log = logging.getLogger(__name__)

KV_SHARE_OF_FREE_MEMORY = 0.5  # the cache may take this much of the GPU memory free at start
PROBE_MIN_COSINE = 0.99  # engine logits vs a plain forward's at start; below: this model cannot use the engine


class EngineUnavailable(RuntimeError):
    """The model cannot be served by the batched engine (architecture, attention); use the plain path."""


def check_supported(model: Any, name: str) -> None:
    """Raise EngineUnavailable for attention the engine cannot mask per row; switch flash attention to sdpa."""
    config = model.config
    attention = config._attn_implementation
    if attention not in ("sdpa", "eager"):
        if not hasattr(model, "set_attn_implementation"):
            raise EngineUnavailable(f"attention {attention} takes no per-row mask")
        # The engine passes its own 4-D mask (each row at its own position); flash attention takes none.
        model.set_attn_implementation("sdpa")
        log.info("%s: attention %s switched to sdpa for the batched engine", name, attention)
    text = config.get_text_config()
    layer_types = getattr(text, "layer_types", None) or []
    window = getattr(text, "sliding_window", None)
    if window is not None and (any(t != "full_attention" for t in layer_types) or not layer_types):
        raise EngineUnavailable(f"sliding-window attention ({window} tokens) is not supported")


def fit_batch(model: Any, max_batch: int, max_len: int, name: str) -> int:
    """``max_batch``, lowered to the requests whose KV cache fits in the GPU memory share (a CPU: unchanged)."""
    if model.device.type != "cuda":
        return max_batch
    import torch

    text = model.config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    dtype_bytes = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 2
    per_slot = 2 * text.num_hidden_layers * heads * head_dim * (max_len + 1) * dtype_bytes
    free, _ = torch.cuda.mem_get_info(model.device)
    fitting = max(1, int(free * KV_SHARE_OF_FREE_MEMORY // per_slot))
    if fitting < max_batch:
        log.warning("%s: the KV cache for %d requests of %d tokens needs %.1f GB, more than %.0f%% of the "
                    "%.1f GB free; serving %d at once", name, max_batch, max_len, per_slot * max_batch / 1e9,
                    100 * KV_SHARE_OF_FREE_MEMORY, free / 1e9, fitting)
    return min(max_batch, fitting)


def probe(forwards: SlotForwards, max_len: int) -> None:
    """The engine's logits for a short sequence must match a plain forward's, else EngineUnavailable."""
    import torch

    ids = [(7 * i + 3) % forwards.vocab for i in range(min(12, max_len))]
    try:
        with torch.inference_mode():
            plain = forwards.model(input_ids=torch.tensor([ids], device=forwards.device), use_cache=False)
            expected = plain.logits[0, -1].float()
            got = forwards.probe_logits(ids).float()
    except Exception as exc:
        raise EngineUnavailable(f"the model failed the engine's probe: {type(exc).__name__}: {exc}") from exc
    cosine = torch.nn.functional.cosine_similarity(expected, got, dim=0).item()
    if cosine < PROBE_MIN_COSINE:
        raise EngineUnavailable(f"the engine's logits differ from a plain forward's (cosine {cosine:.3f})")
