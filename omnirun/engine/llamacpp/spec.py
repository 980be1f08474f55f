"""The llama.cpp backend as `omnirun.plugins` sees it: GGUF files on the CPU, text generation only; `auto` takes
it for single-stream generation, where it measured fastest."""

from __future__ import annotations

from dataclasses import replace

from omnirun.config import Device, DType, HardwareConfig
from omnirun.engine.llamacpp.engine import LlamaCppEngine
from omnirun.hardware.detect import HardwareInfo
from omnirun.hardware.planner import HardwarePlan
from omnirun.plugins import BackendRequest, BackendSpec, Capability

NAME = "llama.cpp"
BATCH_CAP = 16
"""Its decoding slowed with larger batches on this project's CPU (173 tok/s at 16, 126 at 64)."""
AUTO_REASON = (
    "llama.cpp: a GGUF model on the CPU and llama-cpp-python is installed; its kernels run the GGUF weights "
    "as they are and decoded 6-8x faster than plain Transformers fp32 on this project's CPU, agreeing with fp32 "
    "on 98% of greedy tokens under teacher forcing (bf16: 97%; benchmarks/results)"
)
BATCHED = (
    "a batched run: Transformers' fp32 prefill and batched decoding beat llama.cpp's Q4_1 kernels on this "
    "project's CPU, 60-67 against 46 output tok/s over 64 prompts (benchmarks/results)"
)


def problem(request: BackendRequest) -> str | None:
    """Why the llama.cpp backend cannot serve this request, or None when it can."""
    hardware = request.hardware
    if not request.gguf:
        return "the model is not a GGUF file"
    if request.device != Device.cpu:
        return f"it runs on the CPU here, and the device is {request.device}"
    if not request.info.llama_cpp:
        return "llama-cpp-python is not installed: `pip install 'omnirun[llama-cpp]'`"
    explicit = [
        name
        for name, value in (
            ("dtype", hardware.dtype not in (DType.auto, DType.checkpoint)),  # it runs the GGUF's own types
            ("quantization", hardware.quantization),
        )
        if value
    ]
    if hardware.device_map is not None:
        explicit.append("device_map")
    if explicit:
        return f"hardware.{'/'.join(explicit)} set explicitly, which only Transformers honours"
    return None


def auto_problem(request: BackendRequest) -> str | None:
    """Why `auto` does not take llama.cpp: it cannot serve the request, optimizations are off, or a batch."""
    if not request.hardware.optimize:
        return "automatic optimizations are off"
    return problem(request) or (BATCHED if request.batched else None)


def refine_plan(plan: HardwarePlan, request: HardwareConfig, hw: HardwareInfo, auto: bool) -> HardwarePlan:
    reasons = {
        **plan.reasons,
        "dtype": "the GGUF file's own weight types, run by llama.cpp's kernels (no dequantization)",
    }
    return replace(plan, reasons=reasons)


BACKEND = BackendSpec(
    name=NAME,
    factory=LlamaCppEngine,
    capabilities=frozenset({Capability.generate}),
    summary="GGUF files on the CPU through llama-cpp-python",
    problem=problem,
    auto_problem=auto_problem,
    auto_reason=AUTO_REASON,
    auto_priority=20,
    batch_cap=BATCH_CAP,
    refine_plan=refine_plan,
    honours=frozenset(),  # none of model.config_overrides / num_labels / init / attn_implementation
    extras=("llama-cpp",),
)
