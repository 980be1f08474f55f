"""The Transformers backend as `omnirun.plugins` sees it: every task family, and the fallback `auto` reaches when
no faster backend takes the request. Its one plan refinement is the CPU int4 decode copies (`optimize`)."""

from __future__ import annotations

from dataclasses import replace

from omnirun.config import Device, DType, HardwareConfig
from omnirun.engine.hf.engine import HfEngine
from omnirun.hardware.detect import HardwareInfo
from omnirun.hardware.planner import HardwarePlan
from omnirun.plugins import BackendRequest, BackendSpec, Capability

NAME = "transformers"


def auto_problem(request: BackendRequest) -> str | None:
    """Transformers serves every request `auto` brings it: it is the fallback."""
    return None


def refine_plan(plan: HardwarePlan, request: HardwareConfig, hw: HardwareInfo, auto: bool) -> HardwarePlan:
    """int4 decoding copies for fp32 models on the CPU, unless anything asks otherwise (with the reason)."""
    reasons = dict(plan.reasons)
    on = choose_cpu_int4_decode(request, plan, hw, reasons, request.optimize and auto)
    return replace(plan, reasons=reasons, cpu_int4_decode=on)


def choose_cpu_int4_decode(
    request: HardwareConfig, plan: HardwarePlan, hw: HardwareInfo, reasons: dict[str, str], optimize: bool
) -> bool:
    if plan.device != Device.cpu:
        return False
    problem = None
    if not optimize:
        problem = "automatic optimizations are off"
    elif request.dtype != DType.auto:
        problem = "hardware.dtype set explicitly"
    elif plan.quantization:
        problem = "bitsandbytes quantization requested"
    elif request.device_map is not None:
        problem = "a device_map was requested"
    elif not hw.int4_kernels:
        problem = "this torch has no CPU int4 matmul"
    if problem:
        reasons["cpu_int4_decode"] = f"off: {problem}"
        return False
    reasons["cpu_int4_decode"] = (
        "on: Linear layers whose weights lie exactly on a 4-bit grid (dequantized Q4_1 GGUF) decode single "
        "streams from an int4 copy (lossless in the weights) and the output head from a bf16 copy, ~1.6x fp32 "
        "here, parting from fp32 greedy only at near-ties; prefill and batches stay fp32 (dynamic int8 was "
        "faster but agreed with fp32 on only ~35% of greedy tokens)"
    )
    return True


BACKEND = BackendSpec(
    name=NAME,
    factory=HfEngine,
    capabilities=frozenset(Capability),
    summary="Hugging Face Transformers: every AutoModel head, on CPU, CUDA or MPS",
    auto_problem=auto_problem,
    auto_priority=0,
    refine_plan=refine_plan,
)
