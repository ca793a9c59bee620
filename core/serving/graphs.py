"""Decode steps replayed from CUDA graphs captured at start, one per (batch bucket, cache-columns bucket).

A decode step of a small model at small batch is bound by launching hundreds of small kernels, not by
the GPU: a graph launches them all at once. Modes:
- ``off``: eager forwards (CPU, and the fallback).
- ``cuda-graph``: each bucket's eager forward captured with torch.cuda.CUDAGraph.
- ``compile``: the step compiled once by torch.compile with dynamic shapes (fused kernels), then each
  bucket of that captured the same way.
A capture or compile that fails is logged once and every step runs eagerly instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

GRAPH_MODES = ("auto", "off", "cuda-graph", "compile")
WARMUP_FORWARDS = 2  # before capture: lets cuBLAS and the allocator settle outside the graph


class DecodeRunner:
    """Runs ``forward(n, kv_len) -> logits`` for a bucket, from a graph where one was captured."""

    def __init__(self, forward: Callable[[int, int], Any], mode: str, device: Any, name: str):
        if mode not in GRAPH_MODES:
            raise ValueError(f"graph mode {mode!r}; known: {GRAPH_MODES}")
        if mode == "auto":
            mode = "cuda-graph" if device.type == "cuda" else "off"
        if mode != "off" and device.type != "cuda":
            log.warning("%s: graph mode %s needs CUDA; serving with eager steps", name, mode)
            mode = "off"
        self.mode = mode
        self.name = name
        self._device = device
        self._forward = forward
        self._graphs: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.warmup_s = 0.0

    def warm_up(self, shapes: list[tuple[int, int]]) -> None:
        """Compile and capture every shape now, so serving never does; falls back to eager on failure."""
        if self.mode == "off":
            return
        import torch

        started = time.perf_counter()
        step = self._forward
        try:
            if self.mode == "compile":
                step = torch.compile(self._forward, dynamic=True)
            pool = torch.cuda.graph_pool_handle()
            side = torch.cuda.Stream(self._device)
            for n, kv_len in shapes:
                side.wait_stream(torch.cuda.current_stream(self._device))
                with torch.cuda.stream(side), torch.inference_mode():
                    for _ in range(WARMUP_FORWARDS):
                        step(n, kv_len)
                torch.cuda.current_stream(self._device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
                    logits = step(n, kv_len)
                self._graphs[(n, kv_len)] = (graph, logits)
            torch.cuda.synchronize(self._device)
        except Exception as exc:  # any capture failure: serve eagerly rather than not at all
            log.warning("%s: %s failed (%s: %s); serving with eager decode steps",
                        self.name, self.mode, type(exc).__name__, exc)
            self._graphs.clear()
            self.mode = "off"
            torch.cuda.synchronize(self._device)
            torch.cuda.empty_cache()
            return
        self.warmup_s = time.perf_counter() - started
        log.info("%s: %s ready for %d decode shapes in %.1f s", self.name, self.mode, len(shapes), self.warmup_s)

    def run(self, n: int, kv_len: int) -> Any:
        captured = self._graphs.get((n, kv_len))
        if captured is None:
            return self._forward(n, kv_len)
        graph, logits = captured
        graph.replay()
        return logits
