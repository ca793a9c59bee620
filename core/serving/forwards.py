"""The model side of the batched engine: per-slot static inputs, the prefill and decode forwards, token choice.

``SlotForwards`` owns every tensor whose rows are cache slots (the KV cache, each slot's last token and
position, its sampling settings, the tokens it has seen), so moving a request between slots is one call
here. The engine (``engine.BatchEngine``) decides which requests sit in which slots, and when.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.serving import buckets
from core.serving.detokenize import IncrementalDetokenizer
from core.serving.graphs import DecodeRunner
from core.serving.requests import Handle, RequestParams
from core.serving.sampling import choose_tokens
from core.serving.slot_cache import SlotCache
from core.stop_strings import StopStringFilter

FaultHook = Callable[[str, int], None]  # (phase "prefill" | "decode", rows): may raise, for tests


@dataclass(eq=False)
class SlotRequest:
    """One request inside the engine: its tokens so far and the cache slot it occupies (-1: none)."""

    handle: Handle
    prompt: list[int]
    params: RequestParams
    max_new: int
    stops: StopStringFilter
    detok: IncrementalDetokenizer | None
    generated: list[int] = field(default_factory=list)
    slot: int = -1
    length: int = 0  # tokens whose keys and values are in the cache

    def prefill_ids(self) -> list[int]:
        # A request resumed after eviction recomputes its cache from everything but its last token,
        # which it then decodes as usual.
        return self.prompt + self.generated[:-1]


class SlotForwards:
    """Prefill and decode forwards of one causal LM over ``max_batch`` cache slots of ``max_len`` tokens."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int,
        max_len: int,
        graph_mode: str,
        pad_id: int,
        top_k: int,
        fault_hook: FaultHook | None,
        name: str,
    ):
        import torch

        self.model = model
        self.device = model.device
        self._pad_id = pad_id
        self._top_k = top_k
        self._fault_hook = fault_hook
        config = model.config
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._is_eager_attention = config._attn_implementation == "eager"
        self.batch_buckets = buckets.batch_buckets(max_batch)
        self.kv_buckets = buckets.kv_buckets(max_len)
        self.prompt_buckets = buckets.prompt_buckets(max_len)

        self.cache = SlotCache(max_batch, max_len)
        long = dict(dtype=torch.long, device=self.device)
        self.vocab = config.get_text_config().vocab_size
        self._ids = torch.zeros(max_batch, 1, **long)  # (max_batch, 1) last token per slot
        self._pos = torch.zeros(max_batch, **long)  # (max_batch,) its position
        self._rows = torch.arange(max_batch, **long)[:, None]
        self._columns = torch.arange(max_len, **long)
        self._seen = torch.zeros(max_batch, self.vocab, dtype=torch.bool, device=self.device)
        f32 = dict(dtype=torch.float32, device=self.device)
        self._penalty = torch.ones(max_batch, 1, **f32)
        self._temperature = torch.zeros(max_batch, 1, **f32)
        self._top_p = torch.ones(max_batch, 1, **f32)
        self.runner = DecodeRunner(self.decode_forward, graph_mode, self.device, name)

    def warm_up(self) -> None:
        """Capture (or compile) the decode forward for every batch and cache-length bucket."""
        self.runner.warm_up([(n, kv) for n in self.batch_buckets for kv in self.kv_buckets])

    def prefill(self, group: list[SlotRequest]) -> Any:
        """Fill each request's slot with its prompt's keys and values; (len(group), vocab) logits."""
        import torch

        if self._fault_hook is not None:
            self._fault_hook("prefill", len(group))
        seqs = [r.prefill_ids() for r in group]
        q = buckets.bucket_for(max(len(s) for s in seqs), self.prompt_buckets)
        n = len(group)
        ids = torch.full((n, q), self._pad_id, dtype=torch.long)
        positions = torch.zeros((n, q), dtype=torch.long)
        write_pos = torch.full((n, q), self.cache.scratch_column, dtype=torch.long)
        pads = []
        for i, seq in enumerate(seqs):
            pad = q - len(seq)  # left padding: every row's last token sits in the last column
            ids[i, pad:] = torch.tensor(seq)
            positions[i, pad:] = torch.arange(len(seq))
            write_pos[i, pad:] = torch.arange(len(seq))
            pads.append(pad)
        columns = torch.arange(q)
        causal = columns[None, :] <= columns[:, None]  # (q, q)
        real_key = columns[None, :] >= torch.tensor(pads)[:, None]  # (n, q)
        diagonal = torch.eye(q, dtype=torch.bool)  # a padding query attends to itself: no empty rows
        mask = causal[None] & (real_key[:, None, :] | diagonal[None])  # (n, q, q)
        rows = torch.tensor([r.slot for r in group], dtype=torch.long, device=self.device)[:, None]
        self.cache.for_prefill(rows, write_pos.to(self.device))
        out = self.model(
            input_ids=ids.to(self.device), position_ids=positions.to(self.device),
            attention_mask=self._mask_for_model(mask[:, None].to(self.device)),
            use_cache=True, logits_to_keep=1, **{self._cache_kwarg: self.cache},
        )
        for r, seq in zip(group, seqs, strict=True):
            r.length = len(seq)
            self._seen[r.slot] = False
            self._seen[r.slot, torch.tensor(r.prompt + r.generated, device=self.device)] = True
            self._penalty[r.slot] = r.params.repetition_penalty
            self._temperature[r.slot] = r.params.temperature
            self._top_p[r.slot] = r.params.top_p
            if r.generated:
                self._ids[r.slot, 0] = r.generated[-1]
        return out.logits[:, -1, :]

    def decode_forward(self, n: int, kv_len: int) -> Any:
        """One token for rows 0..n-1 from the static inputs; (n, vocab) logits. Captured in graphs."""
        positions = self._pos[:n]
        self.cache.for_decode(self._rows[:n], positions[:, None], kv_len)
        mask = (self._columns[:kv_len][None, :] <= positions[:, None])[:, None, None, :]  # (n, 1, 1, kv_len)
        out = self.model(
            input_ids=self._ids[:n], position_ids=positions[:, None],
            attention_mask=self._mask_for_model(mask), use_cache=True, logits_to_keep=1,
            **{self._cache_kwarg: self.cache},
        )
        return out.logits[:, -1, :]

    def _mask_for_model(self, allowed: Any) -> Any:
        if not self._is_eager_attention:
            return allowed  # sdpa takes a boolean mask: True attends
        import torch

        dtype = self.model.dtype
        return torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)

    def decode(self, busy: list[SlotRequest]) -> Any:
        """One decode step for the busy slots; their (len(busy), vocab) logits, in ``busy`` order."""
        import torch

        n = buckets.bucket_for(max(r.slot for r in busy) + 1, self.batch_buckets)
        kv_len = buckets.bucket_for(max(r.length for r in busy) + 1, self.kv_buckets)
        ids = [0] * n
        positions = [0] * n  # a free slot in the batch writes at its own column 0, which nobody reads
        for r in busy:
            ids[r.slot] = r.generated[-1]
            positions[r.slot] = r.length
        self._ids[:n, 0].copy_(torch.tensor(ids), non_blocking=True)
        self._pos[:n].copy_(torch.tensor(positions), non_blocking=True)
        rows = [r.slot for r in busy]
        if self._fault_hook is not None:
            self._fault_hook("decode", len(busy))
        logits = self.runner.run(n, kv_len)
        # Slots are compact after every step, so the busy rows are usually exactly 0..len(busy)-1.
        is_prefix = rows == list(range(len(rows)))
        return logits[: len(rows)] if is_prefix else logits[rows]

    def choose(self, logits: Any, requests: list[SlotRequest]) -> list[int]:
        """Each request's next token from its row of ``logits``; marks it seen for the repetition penalty."""
        import torch

        slots = [r.slot for r in requests]
        # Rows 0..k-1 (the usual case: slots are compact) are views; anything else is gathered.
        is_prefix = slots == list(range(len(slots)))
        rows: Any = slice(0, len(slots)) if is_prefix else torch.tensor(slots, device=self.device)
        is_any_penalized = any(r.params.repetition_penalty != 1.0 for r in requests)
        tokens = choose_tokens(
            logits, self._seen[rows] if is_any_penalized else None, self._penalty[rows], self._temperature[rows],
            self._top_p[rows], self._top_k, is_any_sampled=any(r.params.temperature > 0 for r in requests),
            is_any_penalized=is_any_penalized,
        )
        if isinstance(rows, slice):
            self._seen[rows].scatter_(1, tokens[:, None], True)
        else:
            self._seen[rows, tokens] = True
        chosen: list[int] = tokens.tolist()
        return chosen

    def move(self, src: int, dst: int, length: int) -> None:
        """Move a request's cache and sampling rows from slot ``src`` to the free slot ``dst``."""
        self.cache.move(src, dst, length)
        for table in (self._seen, self._penalty, self._temperature, self._top_p):
            table[dst] = table[src]

    def probe_logits(self, ids: list[int]) -> Any:
        """The last position's logits for ``ids`` computed as the engine does (prefill, then one decode)."""
        probe = SlotRequest(Handle(0), ids[:-1], RequestParams(max_new_tokens=1), 1, StopStringFilter(()), None)
        probe.slot = 0
        self.prefill([probe])
        self._ids[0, 0] = ids[-1]
        self._pos[0] = len(ids) - 1
        return self.decode_forward(1, buckets.bucket_for(len(ids), self.kv_buckets))[0]
