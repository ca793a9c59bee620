"""GPU facts, and the ``auto`` model choice made from them.

torch is imported inside the functions: importing this module costs nothing, and it works (reporting
no GPU) where torch is not installed at all.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from core.registry import ModelRegistry, ModelSpec

GIB = 1024**3
# Without a GPU big enough: the most correct model that answers within seconds on a CPU, chosen by
# bench/answer_quality.py and bench/answer_speed.py (README, "Models").
CPU_DEFAULT_MODEL = "extractive"
FLASH_ATTENTION_MIN_CAPABILITY = (8, 0)  # flash-attn 2 kernels need Ampere or newer
BF16_MIN_CAPABILITY = (8, 0)  # bf16 tensor cores arrived with Ampere; older cards emulate it slowly


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    free_bytes: int
    total_bytes: int
    capability: tuple[int, int]  # CUDA compute capability, e.g. (9, 0) for H100

    @property
    def free_gb(self) -> float:
        return self.free_bytes / GIB

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GIB


@dataclass(frozen=True)
class AutoChoice:
    model: str
    reason: str  # one line for the log: what was measured and why this model


def cuda_devices() -> list[GpuFacts]:
    """Every visible CUDA device with its free and total memory now; empty without torch or CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    facts = []
    for i in range(torch.cuda.device_count()):
        # mem_get_info asks the driver, so it counts memory other processes hold too;
        # torch.cuda.memory_allocated would only see this process.
        free, total = torch.cuda.mem_get_info(i)
        facts.append(
            GpuFacts(
                index=i,
                name=torch.cuda.get_device_name(i),
                free_bytes=free,
                total_bytes=total,
                capability=torch.cuda.get_device_capability(i),
            )
        )
    return facts


def best_device() -> GpuFacts | None:
    """The CUDA device with the most free memory, where a new model should go; None without CUDA."""
    devices = cuda_devices()
    return max(devices, key=lambda d: d.free_bytes) if devices else None


def flash_attn_installed() -> bool:
    # find_spec does not import the package: importing flash_attn initialises CUDA kernels.
    return importlib.util.find_spec("flash_attn") is not None


def flash_attention_usable(capability: tuple[int, int] | None, is_installed: bool | None = None) -> bool:
    """Flash attention 2 runs only with the package installed and on compute capability 8.0 or newer."""
    if capability is None:
        return False
    if is_installed is None:
        is_installed = flash_attn_installed()
    return is_installed and capability >= FLASH_ATTENTION_MIN_CAPABILITY


def choose_attention(requested: str, capability: tuple[int, int] | None, is_flash_installed: bool) -> str:
    """The attention implementation to load with: ``auto`` means flash attention 2 where usable, else sdpa.

    An explicit ``flash_attention_2`` that cannot run here falls back to sdpa rather than failing the load.
    """
    can_flash = flash_attention_usable(capability, is_flash_installed)
    if requested == "auto":
        return "flash_attention_2" if can_flash else "sdpa"
    if requested == "flash_attention_2" and not can_flash:
        return "sdpa"
    return requested


def choose_dtype(requested: str, capability: tuple[int, int] | None) -> str:
    """The dtype to load with. ``capability`` is None on CPU.

    On CPU it is always float32: half-precision CPU kernels are slow or missing, and the registry's dtype
    describes the GPU setup. On a GPU, ``auto`` is bfloat16 from Ampere on (same range as float32, so no
    overflow) and float16 before.
    """
    if capability is None:
        return "float32"
    if requested != "auto":
        return requested
    return "bfloat16" if capability >= BF16_MIN_CAPABILITY else "float16"


def choose_auto_model(
    registry: ModelRegistry,
    free_gb: float | None,
    *,
    allow_gated: bool = True,
    cpu_default: str = CPU_DEFAULT_MODEL,
) -> AutoChoice:
    """The largest ``auto_candidate`` entry whose ``min_gpu_memory_gb`` fits ``free_gb``, else the CPU model.

    ``free_gb`` is the free memory of the device the model would go on (None: no GPU). The tutorial chose
    by *total* memory and ran out of memory on a shared card; free memory is what a new model can use.
    ``allow_gated=False`` skips gated models (no Hugging Face token configured).
    """
    if free_gb is None:
        return AutoChoice(cpu_default, f"no CUDA GPU: {cpu_default} on CPU")
    candidates = [s for s in registry.specs() if s.auto_candidate and (allow_gated or not s.gated)]
    fitting = [s for s in candidates if s.min_gpu_memory_gb <= free_gb]
    if fitting:
        chosen = max(fitting, key=_size_key)
        return AutoChoice(
            chosen.name,
            f"{free_gb:.1f} GB free on the GPU: {chosen.name} needs {chosen.min_gpu_memory_gb:g} GB, "
            f"the largest of {len(fitting)} fitting candidates",
        )
    if not candidates:
        why = "no auto candidates in the registry" + ("" if allow_gated else " that are not gated")
        return AutoChoice(cpu_default, f"{free_gb:.1f} GB free on the GPU but {why}: {cpu_default} on CPU")
    smallest = min(candidates, key=_size_key)
    return AutoChoice(
        cpu_default,
        f"{free_gb:.1f} GB free on the GPU, the smallest GPU candidate {smallest.name} needs "
        f"{smallest.min_gpu_memory_gb:g} GB: {cpu_default} on CPU",
    )


def _size_key(spec: ModelSpec) -> tuple[float, str]:
    # The memory a model needs ranks it (parameters x bits); the name only makes ties deterministic.
    return (spec.min_gpu_memory_gb, spec.name)
