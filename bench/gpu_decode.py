"""Decode speed of a gemma-2b-shaped model on one CUDA GPU: fp16, bf16, bnb 4-bit, bnb 8-bit; batch 1 and 8.

Random weights in the real architecture (GemmaConfig as gemma-2b: 18 layers, hidden 2048, MLP 16384,
8 query heads, 1 KV head of 256, vocabulary 256000; about 2.5 B parameters), so no download is needed:
speed depends on shapes, not on what the weights learned. Prints one JSON document to stdout and a
line per measurement to stderr as it goes.

For each weight format and batch size: prefill time of the prompt, decode tokens/s, peak memory, and
the share of the GPU's memory bandwidth decode reaches. Decode at small batch is bound by reading
the weights once per step, so that share = bytes of weights read per step x steps/s / bandwidth, with
bandwidth measured here by a device-to-device copy and, for known GPUs, also the vendor's figure.

Self-contained (torch, transformers, bitsandbytes if installed) so it runs on a bare GPU machine.
    python bench/gpu_decode.py [--new-tokens 64] [--prompt-tokens 512] [--tiny]
``--tiny`` runs the same code on a small config, on CPU if there is no GPU: a dry run of the script.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

GB = 1e9  # bandwidth and sizes in decimal units, as vendors quote bandwidth
# Vendor figures (TB/s) by a distinctive part of torch.cuda.get_device_name(); first match wins.
NOMINAL_BANDWIDTH_TB_S = [
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),  # SXM, named "NVIDIA H100 80GB HBM3"
    ("A100-SXM4-80GB", 2.039),
    ("A100-PCIE-80GB", 1.935),
    ("A100", 1.555),  # 40 GB parts
    ("L40S", 0.864),
    ("RTX 4090", 1.008),
    ("L4", 0.3),
    ("T4", 0.32),
]
GEMMA_2B: dict[str, Any] = dict(
    vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
    num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
)
TINY: dict[str, Any] = dict(
    vocab_size=1024, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
)
FORMATS = ("fp16", "bf16", "bnb-4bit", "bnb-8bit")
RUNS = 3  # measured generates per format and batch; medians are reported
KV_DTYPE_BYTES = 2  # the KV cache is in the 16-bit compute dtype in every format here
TIME_BUDGET_S = 270  # skip what is left past this, so the JSON always gets printed


def log(**fields: Any) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_copy_bandwidth_tb_s(device: torch.device, size_bytes: int = 2 * 1024**3,
                                 repeats: int = 20) -> float:
    """Device-to-device copy bandwidth: a copy reads and writes every byte, so 2 x size per copy."""
    src = torch.empty(size_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(device)
    elapsed = time.perf_counter() - started
    del src, dst
    return 2 * size_bytes * repeats / elapsed / 1e12


def nominal_bandwidth_tb_s(name: str) -> float | None:
    return next((bw for key, bw in NOMINAL_BANDWIDTH_TB_S if key in name), None)


def weight_bytes_read_per_step(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter once (the tied embedding as lm_head),
    plus the quantization scales bitsandbytes keeps beside its packed weights."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights counted once
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)  # 4-bit: per-block absmax (and nested state)
        while state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            state = getattr(state, "state2", None)
        scales = getattr(weight, "SCB", None)  # 8-bit: one scale per output row
        if isinstance(scales, torch.Tensor):
            total += scales.numel() * scales.element_size()
    return total


def bandwidth_shares(weight_bytes: int, steps_per_s: float, bandwidth: dict[str, Any]) -> dict[str, Any]:
    """Weight bytes read per second while decoding, and that as a share of measured and nominal bandwidth."""
    achieved_tb_s = weight_bytes * steps_per_s / 1e12
    nominal = bandwidth["nominal_tb_s"]
    return {
        "weight_read_tb_s": round(achieved_tb_s, 3),
        "bandwidth_share_measured": round(achieved_tb_s / bandwidth["measured_copy_tb_s"], 3),
        "bandwidth_share_nominal": round(achieved_tb_s / nominal, 3) if nominal else None,
    }


def kv_bytes_per_step(config: Any, batch: int, context_tokens: int, dtype_bytes: int) -> int:
    """Bytes of KV cache attention reads in one decode step at ``context_tokens`` of context."""
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * dtype_bytes
    return batch * context_tokens * per_token


def build(config: Any, fmt: str, device: torch.device, saved: str | None) -> Any:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if fmt in ("fp16", "bf16"):
        dtype = torch.float16 if fmt == "fp16" else torch.bfloat16
        torch.manual_seed(0)
        with device:  # initialise on the GPU directly: 2.5 B parameters in float32 on CPU would be slow
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return model.to(device).eval()  # a no-op where the device context took effect
    assert saved is not None, "quantized formats load the saved bf16 model"
    compute = torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if fmt == "bnb-8bit":
        compute = torch.float16  # LLM.int8 multiplies in float16; bf16 activations would be cast each layer
    quantization = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
        if fmt == "bnb-4bit"
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    model = AutoModelForCausalLM.from_pretrained(
        saved, dtype=compute, quantization_config=quantization, device_map={"": device.index or 0}
    )
    return model.eval()


class StepClock:
    """A stopping criterion that never stops: it notes the time each new token is ready.

    generate already waits for the GPU at every step (to check whether all sequences are done), so
    synchronising here costs next to nothing and the timestamps are exact.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        sync(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def timed_generate(model: Any, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, seconds per decode step) of one greedy generate of exactly ``new_tokens``."""
    from transformers import StoppingCriteriaList

    clock = StepClock(ids.device)
    sync(ids.device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens,  # exactly this many: eos is ignored
            pad_token_id=0, stopping_criteria=StoppingCriteriaList([clock]),
        )
    # The first token comes out of the prefill pass; each later one is one decode step.
    prefill_s = clock.times[0] - started
    step_s = (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1)
    return prefill_s, step_s


def measure(model: Any, config: Any, batch: int, prompt_tokens: int, new_tokens: int,
            device: torch.device, deadline: float) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, config.vocab_size, (batch, prompt_tokens), generator=generator).to(device)
    warm_prefill_s, warm_step_s = timed_generate(model, ids, 4)  # kernels chosen, workspaces allocated
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Fewer runs where a slow format (LLM.int8) would otherwise overrun the time budget.
    run_s = warm_prefill_s + warm_step_s * new_tokens
    n_runs = max(1, min(RUNS, int((deadline - time.perf_counter()) / run_s)))
    runs = [timed_generate(model, ids, new_tokens) for _ in range(n_runs)]
    prefill_s = statistics.median(r[0] for r in runs)
    step_s = statistics.median(r[1] for r in runs)
    is_cuda = device.type == "cuda"
    return {
        "runs": n_runs,
        "prefill_s": round(prefill_s, 4),
        "prefill_tokens_per_s": round(batch * prompt_tokens / prefill_s, 1),
        "decode_ms_per_step": round(step_s * 1000, 3),
        "decode_steps_per_s": round(1 / step_s, 2),  # per sequence
        "decode_tokens_per_s": round(batch / step_s, 2),  # all sequences together
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / GB, 3) if is_cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--tiny", action="store_true", help="small config; CPU allowed: a dry run")
    args = parser.parse_args()
    started = time.perf_counter()

    import transformers
    from transformers import GemmaConfig

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.tiny:
        print(json.dumps({"error": "no CUDA device: run on a GPU, or pass --tiny for a CPU dry run"}))
        sys.exit(1)
    device = torch.device("cuda", torch.cuda.current_device()) if has_cuda else torch.device("cpu")
    config = GemmaConfig(**(TINY if args.tiny else GEMMA_2B))
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    name = torch.cuda.get_device_name(device) if has_cuda else "cpu"
    report: dict[str, Any] = {
        "device": {
            "name": name,
            "capability": list(torch.cuda.get_device_capability(device)) if has_cuda else None,
            "total_memory_gb": round(torch.cuda.get_device_properties(device).total_memory / GB, 1)
            if has_cuda else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "bitsandbytes": __import__("bitsandbytes").__version__ if has_bnb else None,
        },
        "model": {"architecture": "gemma", "random_weights": True, **(TINY if args.tiny else GEMMA_2B)},
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "results": [],
        "skipped": [],
    }
    if has_cuda:
        measured = measured_copy_bandwidth_tb_s(device)
        nominal = nominal_bandwidth_tb_s(name)
        report["bandwidth"] = {"measured_copy_tb_s": round(measured, 3), "nominal_tb_s": nominal}
        log(bandwidth=report["bandwidth"])

    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="gpu-decode-") as saved:
        is_saved = False
        for fmt in args.formats.split(","):
            if time.perf_counter() - started > TIME_BUDGET_S:
                report["skipped"].append({"weights": fmt, "why": f"time budget of {TIME_BUDGET_S} s spent"})
                continue
            if fmt.startswith("bnb") and not (has_cuda and has_bnb):
                report["skipped"].append({"weights": fmt, "why": "needs CUDA and bitsandbytes"})
                continue
            if fmt.startswith("bnb") and not is_saved:
                # bitsandbytes quantizes while loading, so the quantized runs load a saved bf16 copy.
                build(config, "bf16", device, None).save_pretrained(saved)
                is_saved = True
                gc.collect()
                if has_cuda:
                    torch.cuda.empty_cache()
            load_started = time.perf_counter()
            try:
                model = build(config, fmt, device, saved if is_saved else None)
            except Exception as exc:  # e.g. a bitsandbytes build without kernels for this CUDA
                report["skipped"].append({"weights": fmt, "why": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            load_s = time.perf_counter() - load_started
            weight_bytes = weight_bytes_read_per_step(model)
            for batch in batches:
                row: dict[str, Any] = {
                    "weights": fmt,
                    "batch": batch,
                    "attention": model.config._attn_implementation,
                    "load_s": round(load_s, 2),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "weight_gb_read_per_step": round(weight_bytes / GB, 3),
                }
                try:
                    row.update(measure(model, config, batch, args.prompt_tokens, args.new_tokens, device,
                                       deadline=started + TIME_BUDGET_S))
                except Exception as exc:
                    report["skipped"].append(
                        {"weights": fmt, "batch": batch, "why": f"{type(exc).__name__}: {exc}"[:500]}
                    )
                    continue
                mid_context = args.prompt_tokens + args.new_tokens // 2
                kv_bytes = kv_bytes_per_step(config, batch, mid_context, KV_DTYPE_BYTES)
                row["kv_gb_read_per_step"] = round(kv_bytes / GB, 4)
                if "bandwidth" in report:
                    row.update(bandwidth_shares(weight_bytes, row["decode_steps_per_s"], report["bandwidth"]))
                report["results"].append(row)
                log(**row)
            del model
            gc.collect()
            if has_cuda:
                torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
