"""Batched serving (core/serving) beside today's one-at-a-time ``generate`` on one GPU, in one run.

Gemma-2B-shaped random weights (as bench/gpu_decode.py: speed depends on shapes, not on what weights
learned), in bf16 and bitsandbytes 4-bit, 512-token prompts, 256 new tokens (eos ignored). Per format:
- batch-1 decode tokens/s of ``generate`` (dynamic cache, eager: today's worker) and of the engine, and
  each as a share of the bandwidth a device-to-device copy measures here (weights read once per step);
- closed-loop load through the engine at 1, 8, 32 and 64 concurrent requests (each client submits its
  next request when its last one ends): aggregate tokens/s, time to first token p50/p99, per-request
  decode tokens/s, inter-token gap p50/p99 (admission at every step);
- the cost of that choice: at 8 and 32 concurrent, answers of mixed lengths, admission at every step
  against admission at batch boundaries only (same figures);
- the same closed loop served the way today's worker does it (one generate after another), at 1 and 8.
Prints one JSON document to stdout, progress lines to stderr. ``--tiny`` runs a small config, on CPU
where there is no GPU: a dry run whose figures only show that the script works.
    python bench/gpu_serving.py [--tiny] [--formats bf16,bnb-4bit] [--loads 1,8,32,64]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_decode import (  # noqa: E402
    GEMMA_2B,
    TINY,
    build,
    log,
    measured_copy_bandwidth_tb_s,
    nominal_bandwidth_tb_s,
    sync,
    timed_generate,
    weight_bytes_read_per_step,
)

from core.serving.engine import BatchEngine  # noqa: E402
from core.serving.requests import Handle, RequestParams  # noqa: E402

TIME_BUDGET_S = 280  # what would run past this is skipped, so the JSON gets printed within 6 minutes
PLAIN_LOADS = (1, 8)  # today's path answers one at a time: higher loads only multiply the wait
ADMISSION_LOADS = (8, 32)  # where step and batch-boundary admission are compared
ROUNDS = 2  # requests per client in a closed loop


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class Timeline:
    """When a request was submitted and when each of its tokens reached its reader."""

    def __init__(self, submitted: float):
        self.submitted = submitted
        self.token_times: list[float] = []

    def read(self, handle: Handle) -> Timeline:
        for _ in handle:
            self.token_times.append(time.perf_counter())
        return self

    @property
    def ttft_s(self) -> float:
        return self.token_times[0] - self.submitted

    @property
    def decode_tokens_per_s(self) -> float:
        span = self.token_times[-1] - self.token_times[0]
        return (len(self.token_times) - 1) / span if span > 0 else 0.0

    @property
    def gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]


def summarize(timelines: list[Timeline], wall_s: float, concurrency: int) -> dict[str, Any]:
    tokens = sum(len(t.token_times) for t in timelines)
    ttft = [t.ttft_s for t in timelines]
    gaps = [g for t in timelines for g in t.gaps_s] or [0.0]
    return {
        "concurrency": concurrency,
        "requests": len(timelines),
        "tokens": tokens,
        "aggregate_tokens_per_s": round(tokens / wall_s, 1),
        "ttft_p50_ms": ms(percentile(ttft, 50)),
        "ttft_p99_ms": ms(percentile(ttft, 99)),
        "per_request_tokens_per_s_p50": round(statistics.median(t.decode_tokens_per_s for t in timelines), 1),
        "inter_token_p50_ms": ms(percentile(gaps, 50)),
        "inter_token_p99_ms": ms(percentile(gaps, 99)),
        "wall_s": round(wall_s, 2),
    }


def random_prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (count, length), generator=generator).tolist()


def mixed_lengths(count: int, longest: int) -> list[int]:
    """Answer lengths spread evenly over [longest/8, longest], in a fixed shuffled order: answers that end
    at different steps, as real ones do (ending on eos), which is what batch-boundary admission pays for."""
    shortest = max(1, longest // 8)
    return [shortest + (longest - shortest) * ((i * 37) % count) // max(1, count - 1) for i in range(count)]


def engine_closed_loop(engine: BatchEngine, prompts: list[list[int]], concurrency: int,
                       new_tokens: int, lengths: list[int] | None = None) -> dict[str, Any]:
    total = concurrency * ROUNDS
    timelines: list[Timeline] = []
    lock = threading.Lock()
    next_index = iter(range(total))

    def client() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            params = RequestParams(max_new_tokens=lengths[i % len(lengths)] if lengths else new_tokens)
            timeline = Timeline(time.perf_counter())
            timeline.read(engine.submit(prompts[i % len(prompts)], params))
            with lock:
                timelines.append(timeline)

    before = dataclasses.replace(engine.stats)
    started = time.perf_counter()
    clients = [threading.Thread(target=client) for _ in range(concurrency)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    row = summarize(timelines, time.perf_counter() - started, concurrency)
    after = engine.stats
    forwards, steps = after.prefill_forwards - before.prefill_forwards, after.decode_steps - before.decode_steps
    # With admission at every step, each prefill forward is a pause for every answer decoding beside it.
    row["prefill_forward_ms_mean"] = ms((after.prefill_s - before.prefill_s) / max(1, forwards))
    row["decode_step_ms_mean"] = ms((after.decode_s - before.decode_s) / max(1, steps))
    row["decode_batch_mean"] = round((after.decode_rows - before.decode_rows) / max(1, steps), 1)
    return row


def plain_closed_loop(model: Any, prompts: list[list[int]], concurrency: int, new_tokens: int,
                      device: torch.device) -> dict[str, Any]:
    """Today's worker: ``concurrency`` asks arrive together and are answered one generate after another."""
    from transformers import StoppingCriteriaList

    timelines = []
    started = time.perf_counter()
    for i in range(concurrency):
        timeline = Timeline(started)
        ids = torch.tensor([prompts[i % len(prompts)]], device=device)

        def note(input_ids: Any, scores: Any, timeline: Timeline = timeline, **kwargs: Any) -> Any:
            sync(device)
            timeline.token_times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, pad_token_id=0, stopping_criteria=StoppingCriteriaList([note]))
        timelines.append(timeline)
    return summarize(timelines, time.perf_counter() - started, concurrency)


def shares(weight_bytes: int, steps_per_s: float, bandwidth: dict[str, Any]) -> dict[str, Any]:
    achieved = weight_bytes * steps_per_s / 1e12
    nominal = bandwidth.get("nominal_tb_s")
    return {
        "bandwidth_share_measured": round(achieved / bandwidth["measured_copy_tb_s"], 3),
        "bandwidth_share_nominal": round(achieved / nominal, 3) if nominal else None,
    }


def measure_format(model: Any, config: Any, args: argparse.Namespace, device: torch.device,
                   bandwidth: dict[str, Any], deadline: float) -> dict[str, Any]:
    weight_bytes = weight_bytes_read_per_step(model)
    prompts = random_prompts(max(args.loads) * ROUNDS, args.prompt_tokens, config.vocab_size, seed=1)
    out: dict[str, Any] = {"weight_gb_read_per_step": round(weight_bytes / 1e9, 3), "skipped": []}

    # today's path, batch 1
    ids = torch.tensor(prompts[:1], device=device)
    timed_generate(model, ids, 4)  # warm-up
    prefill_s, step_s = timed_generate(model, ids, args.new_tokens)
    out["plain_batch1"] = {"prefill_ms": ms(prefill_s), "decode_tokens_per_s": round(1 / step_s, 1),
                           **shares(weight_bytes, 1 / step_s, bandwidth)}
    log(plain_batch1=out["plain_batch1"])

    started = time.perf_counter()
    engine = BatchEngine(model, eos_ids=[], max_batch=max(args.loads), max_len=args.prompt_tokens + args.new_tokens,
                         graph_mode=args.graph_mode, name="bench").start()
    try:
        out["engine"] = {"graph_mode": engine.graph_mode, "start_s": round(time.perf_counter() - started, 2),
                         "max_batch": engine.max_batch}
        log(engine=out["engine"])
        engine_closed_loop(engine, prompts, 1, 8)  # warm-up: allocator, first prefill
        single = Timeline(time.perf_counter()).read(engine.submit(prompts[0], RequestParams(args.new_tokens)))
        out["engine_batch1"] = {"ttft_ms": ms(single.ttft_s),
                                "decode_tokens_per_s": round(single.decode_tokens_per_s, 1),
                                **shares(weight_bytes, single.decode_tokens_per_s, bandwidth)}
        log(engine_batch1=out["engine_batch1"])
        out["engine_closed_loop"] = []
        for concurrency in args.loads:
            if time.perf_counter() > deadline:
                out["skipped"].append(f"engine x{concurrency}: time budget spent")
                continue
            row = engine_closed_loop(engine, prompts, concurrency, args.new_tokens)
            out["engine_closed_loop"].append(row)
            log(**row)
        # What admitting at every step costs and buys against admitting at batch boundaries only.
        out["admission"] = []
        for concurrency in ADMISSION_LOADS:
            lengths = mixed_lengths(concurrency * ROUNDS, args.new_tokens)
            for admission in args.admissions:
                if time.perf_counter() > deadline:
                    out["skipped"].append(f"admission {admission} x{concurrency}: time budget spent")
                    continue
                engine.admission = admission  # safe while idle: read at each admission
                row = {"admission": admission, "answer_tokens": "mixed",
                       **engine_closed_loop(engine, prompts, concurrency, args.new_tokens, lengths)}
                out["admission"].append(row)
                log(**row)
            engine.admission = "step"
    finally:
        engine.close()
    out["plain_closed_loop"] = []
    for concurrency in PLAIN_LOADS:
        expected_s = concurrency * (prefill_s + args.new_tokens * step_s)  # one answer after another
        if time.perf_counter() + expected_s > deadline:
            out["skipped"].append(f"plain x{concurrency}: about {expected_s:.0f} s, past the time budget")
            continue
        row = plain_closed_loop(model, prompts, concurrency, args.new_tokens, device)
        out["plain_closed_loop"].append(row)
        log(plain=row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--loads", default="1,8,32,64")
    parser.add_argument("--admissions", default="step,batch")
    parser.add_argument("--formats", default="bf16,bnb-4bit")
    parser.add_argument("--graph-mode", default="auto", help="auto | off | cuda-graph | compile")
    parser.add_argument("--tiny", action="store_true", help="small config; CPU allowed: a dry run")
    args = parser.parse_args()
    args.loads = [int(x) for x in args.loads.split(",")]
    args.admissions = args.admissions.split(",")
    started = time.perf_counter()
    deadline = started + TIME_BUDGET_S

    import transformers
    from transformers import GemmaConfig

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.tiny:
        print(json.dumps({"error": "no CUDA device: run on a GPU, or pass --tiny for a CPU dry run"}))
        sys.exit(1)
    device = torch.device("cuda", torch.cuda.current_device()) if has_cuda else torch.device("cpu")
    shape = TINY if args.tiny else GEMMA_2B
    config = GemmaConfig(**shape)
    config.max_position_embeddings = max(config.max_position_embeddings, args.prompt_tokens + args.new_tokens)
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    name = torch.cuda.get_device_name(device) if has_cuda else "cpu"
    copy_bytes = 2 * 1024**3 if has_cuda else 256 * 1024**2
    bandwidth = {"measured_copy_tb_s": round(measured_copy_bandwidth_tb_s(device, copy_bytes, 5), 4),
                 "nominal_tb_s": nominal_bandwidth_tb_s(name) if has_cuda else None}
    report: dict[str, Any] = {
        "device": {"name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "transformers": transformers.__version__,
                   "bitsandbytes": __import__("bitsandbytes").__version__ if has_bnb else None},
        "cpu_smoke_figures_only": not has_cuda,
        "model": {"architecture": "gemma", "random_weights": True, **shape},
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "bandwidth": bandwidth,
        "results": {}, "skipped": [],
    }
    log(bandwidth=bandwidth)
    with tempfile.TemporaryDirectory(prefix="gpu-serving-") as saved:
        is_saved = False
        for fmt in args.formats.split(","):
            if time.perf_counter() > deadline:
                report["skipped"].append({"weights": fmt, "why": "time budget spent"})
                continue
            if fmt.startswith("bnb") and not (has_cuda and has_bnb):
                report["skipped"].append({"weights": fmt, "why": "needs CUDA and bitsandbytes"})
                continue
            if fmt.startswith("bnb") and not is_saved:
                build(config, "bf16", device, None).save_pretrained(saved)  # bnb quantizes while loading
                is_saved = True
                gc.collect()
            if fmt == "bf16" and not has_cuda:
                fmt = "fp32"  # CPU: half-precision CPU kernels are slow; the engine's logic is the same
            load_started = time.perf_counter()
            try:
                model = build(config, fmt if fmt != "fp32" else "bf16", device, saved if is_saved else None)
                if fmt == "fp32":
                    model = model.float()
            except Exception as exc:
                report["skipped"].append({"weights": fmt, "why": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            load_s = time.perf_counter() - load_started
            try:
                result = measure_format(model, config, args, device, bandwidth, deadline)
            except Exception as exc:
                report["skipped"].append({"weights": fmt, "why": f"{type(exc).__name__}: {exc}"[:500]})
                result = None
            if result is not None:
                result["load_s"] = round(load_s, 1)
                report["results"][fmt] = result
            del model
            gc.collect()
            if has_cuda:
                torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
