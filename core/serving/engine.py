"""The batched generation engine: one thread per loaded model decodes every active request together.

Protocol. ``submit`` queues a request and returns its ``Handle`` at once. The engine thread loops:
1. drop requests whose handle was cancelled (finish CANCELLED, slot freed);
2. admit waiting requests into free cache slots (``admission="step"``: at every step; ``"batch"``: only
   when no request is active) and prefill them, a few prompts per forward, left-padded to a length bucket;
   each gets its first token from its prefill. While answers are decoding, one prefill forward per step,
   so they pause for at most one; with none decoding, every free slot fills at once;
3. one decode step over rows 0..n-1 (n the batch bucket above the highest busy slot), each row at its
   own position, replayed from a CUDA graph where one was captured;
4. each row's token goes to its own handle; a row leaves on EOS, a stop string, its token limit, its cancel.
Guarantees: one request's bad input or failure (prompt too long, a stop-string error) ends that request
with a clear error and no other; running out of GPU memory halves the batch and puts the evicted
requests back at the head of the queue (they resume from the tokens they already streamed, which are
not sent twice). The one exception: a request that alone does not fit in memory fails with that reason.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.serving import buckets
from core.serving.detokenize import Decode, IncrementalDetokenizer
from core.serving.graphs import DecodeRunner
from core.serving.requests import FinishReason, Handle, RequestFailed, RequestParams, TokenEvent
from core.serving.sampling import choose_tokens
from core.serving.slot_cache import SlotCache
from core.stop_strings import StopStringFilter

log = logging.getLogger(__name__)

ADMISSIONS = ("step", "batch")
PREFILL_ROWS = 8  # prompts per prefill forward: more would hold every decoding request up longer
PREFILL_TOKENS = 8192  # padded prompt tokens per prefill forward, bounding its activation memory
KV_SHARE_OF_FREE_MEMORY = 0.5  # the cache may take this much of the GPU memory free at start
PROBE_MIN_COSINE = 0.99  # engine logits vs a plain forward's at start; below: this model cannot use the engine

FaultHook = Callable[[str, int], None]  # (phase "prefill" | "decode", rows): may raise, for tests


@dataclass
class EngineStats:
    """Where the engine thread's time goes (seconds, up to the sync at each step's token readout)."""

    prefill_forwards: int = 0
    prefill_s: float = 0.0
    decode_steps: int = 0
    decode_s: float = 0.0
    decode_rows: int = 0  # answers advanced, summed over steps: / decode_steps = mean batch


class EngineUnavailable(RuntimeError):
    """The model cannot be served by the batched engine (architecture, attention); use the plain path."""


@dataclass(eq=False)
class _Request:
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


class BatchEngine:
    """Continuous batching over a ``SlotCache`` for one transformers causal LM."""

    def __init__(
        self,
        model: Any,
        *,
        eos_ids: list[int],
        decode: Decode | None = None,
        max_batch: int = 32,
        max_len: int = 2048,
        graph_mode: str = "auto",
        admission: str = "step",
        pad_id: int = 0,
        top_k: int = 0,
        fault_hook: FaultHook | None = None,
        name: str = "model",
    ):
        import torch

        if admission not in ADMISSIONS:
            raise ValueError(f"admission {admission!r}; known: {ADMISSIONS}")
        self.model = model
        self.name = name
        self.admission = admission
        self._eos = frozenset(eos_ids)
        self._decode = decode
        self._pad_id = pad_id
        self._top_k = top_k
        self._fault_hook = fault_hook
        self.device = model.device
        config = model.config
        self._check_supported(config)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._is_eager_attention = config._attn_implementation == "eager"
        self.max_len = max_len
        self.max_batch = self._fit_batch(config, max_batch, max_len)
        self.cap = self.max_batch  # lowered after running out of memory
        self._prefill_rows = PREFILL_ROWS
        self.batch_buckets = buckets.batch_buckets(self.max_batch)
        self.kv_buckets = buckets.kv_buckets(max_len)
        self.prompt_buckets = buckets.prompt_buckets(max_len)

        self.cache = SlotCache(self.max_batch, max_len)
        long = dict(dtype=torch.long, device=self.device)
        vocab = config.get_text_config().vocab_size
        self._ids = torch.zeros(self.max_batch, 1, **long)  # (max_batch, 1) last token per slot
        self._pos = torch.zeros(self.max_batch, **long)  # (max_batch,) its position
        self._rows = torch.arange(self.max_batch, **long)[:, None]
        self._columns = torch.arange(max_len, **long)
        self._seen = torch.zeros(self.max_batch, vocab, dtype=torch.bool, device=self.device)
        f32 = dict(dtype=torch.float32, device=self.device)
        self._penalty = torch.ones(self.max_batch, 1, **f32)
        self._temperature = torch.zeros(self.max_batch, 1, **f32)
        self._top_p = torch.ones(self.max_batch, 1, **f32)
        self._runner = DecodeRunner(self._decode_forward, graph_mode, self.device, name)

        self._slots: list[_Request | None] = [None] * self.max_batch
        self._waiting: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._ids_counter = itertools.count(1)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.oom_events = 0
        self.stats = EngineStats()

    # --- public -----------------------------------------------------------------------------------

    @property
    def graph_mode(self) -> str:
        return self._runner.mode

    def start(self) -> BatchEngine:
        """Check the model against a plain forward, capture graphs for every bucket, start the thread."""
        started = time.perf_counter()
        self._probe()
        shapes = [(n, kv) for n in self.batch_buckets for kv in self.kv_buckets]
        self._runner.warm_up(shapes)
        self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
        self._thread.start()
        log.info("%s: batched engine started in %.1f s: up to %d requests of %d tokens, graphs %s, "
                 "admission at every %s", self.name, time.perf_counter() - started, self.max_batch,
                 self.max_len, self.graph_mode, self.admission)
        return self

    def submit(self, prompt_ids: list[int], params: RequestParams) -> Handle:
        """Queue a request; thread-safe. The handle streams its tokens; a bad request fails on its own."""
        handle = Handle(next(self._ids_counter))
        if params.max_new_tokens < 1:
            handle._finish(FinishReason.ERROR, f"max_new_tokens is {params.max_new_tokens}; it must be at least 1")
            return handle
        room = self.max_len - len(prompt_ids)
        if not prompt_ids or room <= 0:
            handle._finish(FinishReason.ERROR, f"The prompt takes {len(prompt_ids)} tokens; {self.name} "
                           f"holds at most {self.max_len - 1} prompt tokens per request.")
            return handle
        stops = StopStringFilter(params.stop)
        if params.stop and self._decode is None:
            handle._finish(FinishReason.ERROR, "stop strings need the engine to have a tokenizer")
            return handle
        detok = IncrementalDetokenizer(self._decode) if self._decode is not None else None
        request = _Request(handle, list(prompt_ids), params, min(params.max_new_tokens, room), stops, detok)
        with self._cond:
            if self._closed:
                handle._finish(FinishReason.ERROR, f"{self.name} is shutting down")
                return handle
            self._waiting.append(request)
            self._cond.notify()
        return handle

    def active_count(self) -> int:
        return sum(r is not None for r in self._slots)

    def close(self) -> None:
        """Stop the thread; requests still in flight end with an error saying so."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        for request in [*self._waiting, *(r for r in self._slots if r is not None)]:
            request.handle._finish(FinishReason.ERROR, f"{self.name} shut down before the answer finished")
        self._waiting.clear()
        self._slots = [None] * self.max_batch

    # --- checks at start --------------------------------------------------------------------------

    def _check_supported(self, config: Any) -> None:
        attention = config._attn_implementation
        if attention not in ("sdpa", "eager"):
            if not hasattr(self.model, "set_attn_implementation"):
                raise EngineUnavailable(f"attention {attention} takes no per-row mask")
            # The engine passes its own 4-D mask (each row at its own position); flash attention takes none.
            self.model.set_attn_implementation("sdpa")
            log.info("%s: attention %s switched to sdpa for the batched engine", self.name, attention)
        text = config.get_text_config()
        layer_types = getattr(text, "layer_types", None) or []
        window = getattr(text, "sliding_window", None)
        if window is not None and (any(t != "full_attention" for t in layer_types) or not layer_types):
            raise EngineUnavailable(f"sliding-window attention ({window} tokens) is not supported")

    def _fit_batch(self, config: Any, max_batch: int, max_len: int) -> int:
        if self.device.type != "cuda":
            return max_batch
        import torch

        text = config.get_text_config()
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        dtype_bytes = torch.finfo(self.model.dtype).bits // 8 if self.model.dtype.is_floating_point else 2
        per_slot = 2 * text.num_hidden_layers * heads * head_dim * (max_len + 1) * dtype_bytes
        free, _ = torch.cuda.mem_get_info(self.device)
        fitting = max(1, int(free * KV_SHARE_OF_FREE_MEMORY // per_slot))
        if fitting < max_batch:
            log.warning("%s: the KV cache for %d requests of %d tokens needs %.1f GB, more than %.0f%% of the "
                        "%.1f GB free; serving %d at once", self.name, max_batch, max_len, per_slot * max_batch / 1e9,
                        100 * KV_SHARE_OF_FREE_MEMORY, free / 1e9, fitting)
        return min(max_batch, fitting)

    def _probe(self) -> None:
        """The engine's logits for a short sequence must match a plain forward's, else EngineUnavailable."""
        import torch

        vocab = self._seen.shape[1]
        ids = [(7 * i + 3) % vocab for i in range(min(12, self.max_len))]
        try:
            with torch.inference_mode():
                plain = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
                expected = plain.logits[0, -1].float()
                probe = _Request(Handle(0), ids[:-1], RequestParams(max_new_tokens=1), 1, StopStringFilter(()), None)
                probe.slot = 0
                self._prefill_forward([probe])
                self._ids[0, 0] = ids[-1]
                self._pos[0] = len(ids) - 1
                got = self._decode_forward(1, buckets.bucket_for(len(ids), self.kv_buckets))[0].float()
        except Exception as exc:
            raise EngineUnavailable(f"the model failed the engine's probe: {type(exc).__name__}: {exc}") from exc
        cosine = torch.nn.functional.cosine_similarity(expected, got, dim=0).item()
        if cosine < PROBE_MIN_COSINE:
            raise EngineUnavailable(f"the engine's logits differ from a plain forward's (cosine {cosine:.3f})")

    # --- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        while True:
            with self._cond:
                while not self._closed and not self._waiting and not any(self._slots):
                    self._cond.wait()
                if self._closed:
                    return
            try:
                with torch.inference_mode():
                    self._drop_cancelled()
                    self._admit()
                    if any(self._slots):
                        self._step()
            except Exception as exc:  # a bug or a device fault: those in flight get told, the engine lives on
                log.exception("%s: engine step failed", self.name)
                for request in [r for r in self._slots if r is not None]:
                    self._end(request, FinishReason.ERROR, f"generation failed: {type(exc).__name__}: {exc}")

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._slots if r is not None and r.handle.is_cancelled]:
            self._end(request, FinishReason.CANCELLED)
        with self._cond:
            kept = [r for r in self._waiting if not r.handle.is_cancelled]
            dropped = [r for r in self._waiting if r.handle.is_cancelled]
            self._waiting = collections.deque(kept)
        for request in dropped:
            request.handle._finish(FinishReason.CANCELLED)

    def _admit(self) -> None:
        if self.admission == "batch" and any(self._slots):
            return
        import torch

        is_decoding = any(self._slots)
        while True:
            free = [i for i in range(self.cap) if self._slots[i] is None]
            with self._cond:
                if not free or not self._waiting:
                    return
                group = self._take_group(len(free))
            for request, slot in zip(group, free, strict=False):
                request.slot = slot
                self._slots[slot] = request
            fresh = [r for r in group if not r.generated]  # resumed requests already have their next input
            started = time.perf_counter()
            try:
                logits = self._prefill_forward(group)
                tokens = self._choose(logits[[group.index(r) for r in fresh]], fresh) if fresh else []
            except torch.OutOfMemoryError:
                self._prefill_out_of_memory(group)
                return
            self.stats.prefill_forwards += 1
            self.stats.prefill_s += time.perf_counter() - started
            self._accept_all(fresh, tokens)
            if is_decoding:  # one prefill forward per step: answers in flight pause for one, not for a burst
                return

    def _take_group(self, free: int) -> list[_Request]:
        """The next prompts for one prefill forward: FIFO, at most ``free`` and the row and token budgets."""
        group: list[_Request] = []
        while self._waiting and len(group) < min(free, self._prefill_rows):
            longest = max(len(r.prefill_ids()) for r in [*group, self._waiting[0]])
            padded = buckets.bucket_for(longest, self.prompt_buckets) * (len(group) + 1)
            if group and padded > PREFILL_TOKENS:
                break
            group.append(self._waiting.popleft())
        return group

    def _prefill_forward(self, group: list[_Request]) -> Any:
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

    def _decode_forward(self, n: int, kv_len: int) -> Any:
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

    def _step(self) -> None:
        import torch

        busy = [r for r in self._slots if r is not None]
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
        # Slots are compact after every step, so the busy rows are usually exactly 0..len(busy)-1.
        is_prefix = rows == list(range(len(rows)))
        started = time.perf_counter()
        try:
            if self._fault_hook is not None:
                self._fault_hook("decode", len(busy))
            logits = self._runner.run(n, kv_len)
            tokens = self._choose(logits[: len(rows)] if is_prefix else logits[rows], busy)
        except torch.OutOfMemoryError:  # nothing accepted yet: the step's cache writes get overwritten
            self._decode_out_of_memory(busy)
            return
        self.stats.decode_steps += 1
        self.stats.decode_s += time.perf_counter() - started
        self.stats.decode_rows += len(busy)
        for r in busy:
            r.length += 1
        self._accept_all(busy, tokens)

    def _choose(self, logits: Any, requests: list[_Request]) -> list[int]:
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

    def _accept_all(self, requests: list[_Request], tokens: list[int]) -> None:
        for request, token in zip(requests, tokens, strict=True):
            self._accept(request, token)
        self._compact()

    def _accept(self, request: _Request, token: int) -> None:
        request.generated.append(token)
        if token in self._eos:
            self._end(request, FinishReason.EOS)
            return
        try:
            text = request.detok.add(token) if request.detok is not None else ""
            shown = request.stops.feed(text)
        except Exception as exc:  # a tokenizer or stop-string failure ends this request only
            self._end(request, FinishReason.ERROR, f"could not turn the answer into text: {exc}")
            return
        request.handle._emit(TokenEvent(token, shown))
        if request.stops.stopped:
            self._end(request, FinishReason.STOP)
        elif len(request.generated) >= request.max_new:
            self._end(request, FinishReason.LENGTH)

    def _end(self, request: _Request, reason: FinishReason, error: str | None = None) -> None:
        tail = ""
        if reason in (FinishReason.EOS, FinishReason.LENGTH):
            try:
                held = request.detok.flush() if request.detok is not None else ""
                tail = request.stops.feed(held) + request.stops.flush()
            except Exception as exc:
                reason, error = FinishReason.ERROR, f"could not turn the answer into text: {exc}"
        if request.slot >= 0 and self._slots[request.slot] is request:
            self._slots[request.slot] = None
        request.slot = -1
        request.handle._finish(reason, error, tail)

    def _compact(self) -> None:
        """Move requests from the highest slots into free lower ones, so the batch bucket stays small."""
        busy = sorted((r for r in self._slots if r is not None), key=lambda r: r.slot)
        for dst, request in enumerate(busy):
            if request.slot == dst:
                continue
            src = request.slot
            self.cache.move(src, dst, request.length)
            for table in (self._seen, self._penalty, self._temperature, self._top_p):
                table[dst] = table[src]
            self._slots[dst], self._slots[src] = request, None
            request.slot = dst

    # --- running out of memory ---------------------------------------------------------------------

    def _decode_out_of_memory(self, busy: list[_Request]) -> None:
        self._free_cuda_memory()
        self.oom_events += 1
        if len(busy) == 1:
            self._end(busy[0], FinishReason.ERROR, "out of GPU memory even with this answer alone")
            return
        self.cap = max(1, len(busy) // 2)
        evicted = [r for r in busy if r.slot >= self.cap]
        for request in evicted:
            self._slots[request.slot] = None
            request.slot = -1
        with self._cond:
            self._waiting.extendleft(reversed(evicted))
        log.warning("%s: out of GPU memory decoding %d answers; now %d at once, %d requeued",
                    self.name, len(busy), self.cap, len(evicted))

    def _prefill_out_of_memory(self, group: list[_Request]) -> None:
        self._free_cuda_memory()
        self.oom_events += 1
        for request in group:
            self._slots[request.slot] = None
            request.slot = -1
        active = sum(r is not None for r in self._slots)
        if len(group) == 1 and not active:
            self._end(group[0], FinishReason.ERROR,
                      f"the prompt of {len(group[0].prompt)} tokens needs more GPU memory than is free")
            return
        if len(group) > 1:
            self._prefill_rows = max(1, len(group) // 2)
        else:
            self.cap = max(1, active)
        with self._cond:
            self._waiting.extendleft(reversed(group))
        log.warning("%s: out of GPU memory prefilling %d prompts beside %d answers; %d prompts per prefill, "
                    "%d answers at once", self.name, len(group), active, self._prefill_rows, self.cap)

    def _free_cuda_memory(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()


__all__ = ["BatchEngine", "EngineUnavailable", "RequestFailed"]
