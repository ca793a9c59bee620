"""GPU facts, the dtype/attention rules, the load plan, the `auto` model choice and the packaged registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import gpu
from core.backends.transformers_loading import QUANTIZATIONS, plan_load
from core.chat_formats import FORMATS, TEMPLATE
from core.registry import ModelRegistry, ModelSpec

HOPPER = (9, 0)
TURING = (7, 5)  # RTX 2080 Ti, T4: the tutorial's card


def fake_gpu(capability: tuple[int, int], free_gb: float = 40.0) -> gpu.GpuFacts:
    return gpu.GpuFacts(0, "test", int(free_gb * gpu.GIB), int(80 * gpu.GIB), capability)


def candidate(name: str, gb: float, *, gated: bool = False, auto: bool = True) -> ModelSpec:
    return ModelSpec(
        name=name, backend="transformers", min_gpu_memory_gb=gb, gated=gated, auto_candidate=auto
    )


SYNTHETIC = ModelRegistry(
    {
        s.name: s
        for s in [
            candidate("small-4bit", 5),
            candidate("small", 8),
            candidate("big-4bit", 9, gated=True),
            candidate("big", 19, gated=True),
            candidate("huge-not-auto", 30, auto=False),
        ]
    }
)


@pytest.mark.parametrize(
    ("free_gb", "expected"),
    [(None, gpu.CPU_DEFAULT_MODEL), (3.0, gpu.CPU_DEFAULT_MODEL), (5.0, "small-4bit"), (8.5, "small"),
     (12.0, "big-4bit"), (79.0, "big")],
)
def test_auto_picks_the_largest_candidate_that_fits(free_gb: float | None, expected: str) -> None:
    assert gpu.choose_auto_model(SYNTHETIC, free_gb).model == expected


def test_auto_skips_gated_models_without_a_token() -> None:
    assert gpu.choose_auto_model(SYNTHETIC, 79.0, allow_gated=False).model == "small"


def test_auto_reason_says_what_was_measured() -> None:
    fits = gpu.choose_auto_model(SYNTHETIC, 12.0)
    assert "12.0 GB free" in fits.reason and "big-4bit needs 9 GB" in fits.reason
    too_small = gpu.choose_auto_model(SYNTHETIC, 3.0)
    assert "small-4bit needs 5 GB" in too_small.reason and "CPU" in too_small.reason
    assert "no CUDA GPU" in gpu.choose_auto_model(SYNTHETIC, None).reason


@pytest.mark.parametrize("free_gb", [0.5, 4.9, 5.0, 6.0, 8.0, 9.5, 12.0, 18.9, 19.0, 24.0, 80.0, 141.0])
def test_packaged_registry_choice_fits_and_is_the_largest(free_gb: float) -> None:
    registry = ModelRegistry.load()
    choice = gpu.choose_auto_model(registry, free_gb)
    candidates = [s for s in registry.specs() if s.auto_candidate]
    fitting = [s for s in candidates if s.min_gpu_memory_gb <= free_gb]
    if not fitting:
        assert choice.model == gpu.CPU_DEFAULT_MODEL
        return
    chosen = registry.get(choice.model)
    assert chosen.min_gpu_memory_gb <= free_gb
    assert all(s.min_gpu_memory_gb <= chosen.min_gpu_memory_gb for s in fitting)


def test_packaged_registry_offers_auto_a_quantized_choice_and_a_cpu_default() -> None:
    registry = ModelRegistry.load()
    assert gpu.CPU_DEFAULT_MODEL in registry
    auto = [s for s in registry.specs() if s.auto_candidate]
    assert any(s.quantization != "none" for s in auto)
    assert all(s.backend == "transformers" and s.min_gpu_memory_gb > 0 for s in auto)


def test_packaged_registry_entries_are_loadable_settings() -> None:
    for spec in ModelRegistry.load().specs():
        if spec.backend == "transformers":
            assert spec.weights, spec.name
            assert spec.quantization in QUANTIZATIONS, spec.name
            assert spec.chat_format == TEMPLATE or spec.chat_format in FORMATS, spec.name
        if spec.backend == "openai":
            assert spec.context_tokens > 0, spec.name
        if spec.gated:
            assert "gated" in spec.license, f"{spec.name}: say in the license note how to get access"
        assert isinstance(spec.stop_tokens, tuple), spec.name


@pytest.mark.parametrize(
    ("requested", "capability", "expected"),
    [("auto", None, "float32"), ("bfloat16", None, "float32"), ("auto", HOPPER, "bfloat16"),
     ("auto", TURING, "float16"), ("float16", HOPPER, "float16")],
)
def test_dtype_rule(requested: str, capability: tuple[int, int] | None, expected: str) -> None:
    assert gpu.choose_dtype(requested, capability) == expected


@pytest.mark.parametrize(
    ("requested", "capability", "is_installed", "expected"),
    [
        ("auto", HOPPER, True, "flash_attention_2"),
        ("auto", HOPPER, False, "sdpa"),
        ("auto", TURING, True, "sdpa"),  # flash-attn 2 has no kernels before Ampere
        ("auto", None, True, "sdpa"),
        ("flash_attention_2", TURING, True, "sdpa"),  # asked for but unusable: fall back, don't fail
        ("eager", HOPPER, True, "eager"),
    ],
)
def test_attention_rule(
    requested: str, capability: tuple[int, int] | None, is_installed: bool, expected: str
) -> None:
    assert gpu.choose_attention(requested, capability, is_installed) == expected


def test_load_plan_passes_quantization_only_when_configured() -> None:
    spec = ModelSpec(name="m", backend="transformers", weights="x")
    assert plan_load(spec, fake_gpu(TURING), is_flash_installed=False).quantization == "none"
    four_bit = ModelSpec(name="m", backend="transformers", weights="x", quantization="bnb-4bit")
    plan = plan_load(four_bit, fake_gpu(TURING), is_flash_installed=False)
    assert (plan.device, plan.dtype, plan.quantization) == ("cuda:0", "float16", "bnb-4bit")
    with pytest.raises(ValueError, match="unknown quantization"):
        plan_load(ModelSpec(name="m", backend="transformers", quantization="gptq"), None, False)


def test_load_plan_runs_8bit_in_float16() -> None:
    eight_bit = ModelSpec(name="m", backend="transformers", weights="x", quantization="bnb-8bit")
    assert plan_load(eight_bit, fake_gpu(HOPPER), is_flash_installed=False).dtype == "float16"
    four_bit = ModelSpec(name="m", backend="transformers", weights="x", quantization="bnb-4bit")
    assert plan_load(four_bit, fake_gpu(HOPPER), is_flash_installed=False).dtype == "bfloat16"


def test_load_plan_keeps_flash_attention_off_float32() -> None:
    spec = ModelSpec(name="m", backend="transformers", weights="x", dtype="float32")
    assert plan_load(spec, fake_gpu(HOPPER), is_flash_installed=True).attention == "sdpa"


def test_importing_gpu_does_not_import_torch() -> None:
    code = "import sys, core.gpu; print('torch' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]  # `python -c` imports core from its working directory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"


def test_no_cuda_means_no_devices() -> None:
    assert (gpu.cuda_devices() == []) == (not torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_facts_match_torch() -> None:
    facts = gpu.cuda_devices()
    assert len(facts) == torch.cuda.device_count()
    for f in facts:
        assert 0 < f.free_bytes <= f.total_bytes
        assert f.capability == torch.cuda.get_device_capability(f.index)
    best = gpu.best_device()
    assert best is not None
    choice = gpu.choose_auto_model(ModelRegistry.load(), best.free_gb)
    print(f"{best.name}: {choice.reason}")  # shown with -s: what auto would pick on this machine
    chosen = ModelRegistry.load().get(choice.model)
    assert chosen.min_gpu_memory_gb <= best.free_gb


def test_worker_settings_resolve_auto_to_the_cpu_default_without_a_gpu(monkeypatch) -> None:
    import core.gpu
    from phobos.runtime import resolve_auto
    from phobos.settings import Settings
    from workers.settings import WorkerSettings

    monkeypatch.setattr(core.gpu, "best_device", lambda: None)  # this machine's truth, made explicit
    settings = Settings(worker=WorkerSettings(PHOBOS_DEFAULT_MODEL="auto"))
    names, default = resolve_auto(settings, ModelRegistry.load(), ["auto", "smollm2-135m"])
    assert names == ["extractive", "smollm2-135m"] and default == "extractive"
