"""Batched generation for transformers causal LMs: every active request of a loaded model decodes in one batch.

``engine.BatchEngine`` admits new requests between decode steps and streams each request's tokens and text to
its own ``requests.Handle``; ``forwards.SlotForwards`` runs its prefill and decode forwards over the model's
static KV cache (``slot_cache``); ``model_checks`` decides at start whether the engine can serve a model and how
many requests fit. Shapes are bucketed
(``buckets``) so CUDA graphs captured at start (``graphs``) cover every step. ``embed_batcher`` groups the
query embeddings of concurrent asks into one call. torch and transformers are imported inside functions.
"""

from core.serving.requests import FinishReason, Handle, RequestFailed, RequestParams, TokenEvent

__all__ = ["FinishReason", "Handle", "RequestFailed", "RequestParams", "TokenEvent"]
