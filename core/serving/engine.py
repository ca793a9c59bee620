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
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.serving import buckets, model_checks
from core.serving.detokenize import Decode, IncrementalDetokenizer
from core.serving.forwards import FaultHook, SlotForwards, SlotRequest
from core.serving.model_checks import EngineUnavailable
from core.serving.requests import FinishReason, Handle, RequestFailed, RequestParams, TokenEvent
from core.stop_strings import StopStringFilter

log = logging.getLogger(__name__)

ADMISSIONS = ("step", "batch")
PREFILL_ROWS = 8  # prompts per prefill forward: more would hold every decoding request up longer
PREFILL_TOKENS = 8192  # padded prompt tokens per prefill forward, bounding its activation memory


@dataclass
class EngineStats:
    """Where the engine thread's time goes (seconds, up to the sync at each step's token readout)."""

    prefill_forwards: int = 0
    prefill_s: float = 0.0
    decode_steps: int = 0
    decode_s: float = 0.0
    decode_rows: int = 0  # answers advanced, summed over steps: / decode_steps = mean batch


class BatchEngine:
    """Continuous batching for one transformers causal LM: which request holds which cache slot, and when.

    The forwards themselves, and every tensor indexed by slot, live in ``SlotForwards``.
    """

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
        if admission not in ADMISSIONS:
            raise ValueError(f"admission {admission!r}; known: {ADMISSIONS}")
        self.model = model
        self.name = name
        self.admission = admission
        self._eos = frozenset(eos_ids)
        self._decode = decode
        self.device = model.device
        model_checks.check_supported(model, name)
        self.max_len = max_len
        self.max_batch = model_checks.fit_batch(model, max_batch, max_len, name)
        self.cap = self.max_batch  # lowered after running out of memory
        self._prefill_rows = PREFILL_ROWS
        self.forwards = SlotForwards(model, max_batch=self.max_batch, max_len=max_len, graph_mode=graph_mode,
                                     pad_id=pad_id, top_k=top_k, fault_hook=fault_hook, name=name)

        self._slots: list[SlotRequest | None] = [None] * self.max_batch
        self._waiting: collections.deque[SlotRequest] = collections.deque()
        self._cond = threading.Condition()
        self._ids_counter = itertools.count(1)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.oom_events = 0
        self.stats = EngineStats()

    # --- public -----------------------------------------------------------------------------------

    @property
    def graph_mode(self) -> str:
        return self.forwards.runner.mode

    def start(self) -> BatchEngine:
        """Check the model against a plain forward, capture graphs for every bucket, start the thread."""
        started = time.perf_counter()
        model_checks.probe(self.forwards, self.max_len)
        self.forwards.warm_up()
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
        request = SlotRequest(handle, list(prompt_ids), params, min(params.max_new_tokens, room), stops, detok)
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
                logits = self.forwards.prefill(group)
                tokens = self.forwards.choose(logits[[group.index(r) for r in fresh]], fresh) if fresh else []
            except torch.OutOfMemoryError:
                self._prefill_out_of_memory(group)
                return
            self.stats.prefill_forwards += 1
            self.stats.prefill_s += time.perf_counter() - started
            self._accept_all(fresh, tokens)
            if is_decoding:  # one prefill forward per step: answers in flight pause for one, not for a burst
                return

    def _take_group(self, free: int) -> list[SlotRequest]:
        """The next prompts for one prefill forward: FIFO, at most ``free`` and the row and token budgets."""
        group: list[SlotRequest] = []
        while self._waiting and len(group) < min(free, self._prefill_rows):
            longest = max(len(r.prefill_ids()) for r in [*group, self._waiting[0]])
            padded = buckets.bucket_for(longest, self.forwards.prompt_buckets) * (len(group) + 1)
            if group and padded > PREFILL_TOKENS:
                break
            group.append(self._waiting.popleft())
        return group

    def _step(self) -> None:
        import torch

        busy = [r for r in self._slots if r is not None]
        started = time.perf_counter()
        try:
            tokens = self.forwards.choose(self.forwards.decode(busy), busy)
        except torch.OutOfMemoryError:  # nothing accepted yet: the step's cache writes get overwritten
            self._decode_out_of_memory(busy)
            return
        self.stats.decode_steps += 1
        self.stats.decode_s += time.perf_counter() - started
        self.stats.decode_rows += len(busy)
        for r in busy:
            r.length += 1
        self._accept_all(busy, tokens)

    def _accept_all(self, requests: list[SlotRequest], tokens: list[int]) -> None:
        for request, token in zip(requests, tokens, strict=True):
            self._accept(request, token)
        self._compact()

    def _accept(self, request: SlotRequest, token: int) -> None:
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

    def _end(self, request: SlotRequest, reason: FinishReason, error: str | None = None) -> None:
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
            self.forwards.move(src, dst, request.length)
            self._slots[dst], self._slots[src] = request, None
            request.slot = dst

    # --- running out of memory ---------------------------------------------------------------------

    def _decode_out_of_memory(self, busy: list[SlotRequest]) -> None:
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

    def _prefill_out_of_memory(self, group: list[SlotRequest]) -> None:
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


__all__ = ["BatchEngine", "EngineStats", "EngineUnavailable", "FaultHook", "RequestFailed"]
