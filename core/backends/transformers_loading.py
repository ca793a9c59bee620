"""Loading a transformers causal LM: where it goes (device, dtype, attention, quantization) and how it ends.

Imports only the standard library, torch and transformers (bitsandbytes when a quantized entry loads),
like the rest of the transformers backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import gpu
from core.registry import ModelSpec

log = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "bnb-4bit", "bnb-8bit")


@dataclass(frozen=True)
class LoadPlan:
    """How an entry will be loaded on this machine: decided from the spec and the GPU's facts."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # float32 | float16 | bfloat16
    attention: str  # flash_attention_2 | sdpa | eager
    quantization: str  # none | bnb-4bit | bnb-8bit


def plan_load(spec: ModelSpec, device: gpu.GpuFacts | None, is_flash_installed: bool) -> LoadPlan:
    """Pick device, dtype, attention and quantization for ``spec``; ``device`` None means CPU."""
    if spec.quantization not in QUANTIZATIONS:
        raise ValueError(f"{spec.name}: unknown quantization {spec.quantization!r}; known: {QUANTIZATIONS}")
    capability = device.capability if device is not None else None
    if spec.quantization != "none" and device is None:
        raise RuntimeError(
            f"{spec.name} is configured for {spec.quantization}, which needs a CUDA GPU; "
            "choose the entry without quantization to run on CPU."
        )
    dtype = gpu.choose_dtype(spec.dtype, capability)
    if spec.quantization == "bnb-8bit" and spec.dtype == "auto" and device is not None:
        dtype = "float16"  # LLM.int8 multiplies in float16: bfloat16 activations would be cast at every layer
    attention = gpu.choose_attention(spec.attention, capability, is_flash_installed)
    if attention == "flash_attention_2" and dtype == "float32":
        attention = "sdpa"  # flash attention kernels exist for fp16/bf16 only
    return LoadPlan(
        device=f"cuda:{device.index}" if device is not None else "cpu",
        dtype=dtype,
        attention=attention,
        quantization=spec.quantization,
    )


def split_gguf(weights: str) -> tuple[str, str | None]:
    """A GGUF file loads as (its folder, gguf_file=its name); anything else is a hub id or a model folder."""
    if weights.endswith(".gguf"):
        path = Path(weights)
        return str(path.parent), path.name
    return weights, None


def load_model(spec: ModelSpec, plan: LoadPlan, hf_token: str | None) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) for ``spec.weights`` as ``plan`` says; the model wholly on its device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("loading %s from %s: %s", spec.name, spec.weights, plan)
    source, gguf_file = split_gguf(spec.weights_path())
    common: dict[str, Any] = {"token": hf_token or None, "trust_remote_code": spec.trust_remote_code}
    if gguf_file is not None:
        common["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    model_kwargs: dict[str, Any] = {
        **common,
        "dtype": getattr(torch, plan.dtype),
        "attn_implementation": plan.attention,
    }
    if plan.device != "cpu":
        model_kwargs["device_map"] = {"": plan.device}  # the whole model on one GPU, never offloaded
    quantization_config = _quantization_config(plan)
    if quantization_config is not None:  # only when configured: the tutorial always passed 4-bit
        model_kwargs["quantization_config"] = quantization_config
    model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
    model.eval()
    return tokenizer, model


def resolve_device(device: str | None) -> gpu.GpuFacts | None:
    """The GPU ``device`` names ("cuda", "cuda:N"; None: the freest GPU, if any), or None for the CPU."""
    if device == "cpu":
        return None
    if device is None:
        return gpu.best_device()
    devices = gpu.cuda_devices()
    if not devices:
        raise RuntimeError(f"device {device!r} asked for, but no CUDA device is visible")
    if device == "cuda":
        return max(devices, key=lambda d: d.free_bytes)
    index = int(device.removeprefix("cuda:"))
    return next(d for d in devices if d.index == index)


def _quantization_config(plan: LoadPlan) -> Any:
    if plan.quantization == "none":
        return None
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"{plan.quantization} needs the bitsandbytes package: pip install bitsandbytes")
    if plan.quantization == "bnb-4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",  # NF4 suits normally distributed weights better than plain int4
            bnb_4bit_compute_dtype=getattr(torch, plan.dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def eos_ids(model: Any, tokenizer: Any, stop_tokens: tuple[str, ...]) -> list[int]:
    """Every token id that ends the answer: the model's eos ids plus the entry's extra stop tokens.

    Llama 3 Instruct ends a turn with <|eot_id|>, which older copies of its generation config do not list.
    """
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    configured_ids = configured if isinstance(configured, list) else [configured]
    for candidate in [*configured_ids, tokenizer.eos_token_id]:
        if candidate is not None and candidate not in ids:
            ids.append(int(candidate))
    for token in stop_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"stop token {token!r} is not in the tokenizer's vocabulary")
        if token_id not in ids:
            ids.append(int(token_id))
    if not ids:
        raise ValueError("the model has no eos token and the entry names no stop_tokens")
    return ids
