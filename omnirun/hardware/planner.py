"""Automatic hardware configuration: place the model (device and backend), then plan dtype, quantization and
batch size.

`place()` and `plan()` are pure functions of the request, the model's size and a `HardwareInfo`, so tests
drive them with simulated machines. Every choice carries a human-readable reason, recorded in the run's
manifest. The device is resolved once, in `place()`; the plan takes it from the `Placement`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from omnirun import plugins
from omnirun.config import Device, DType, HardwareConfig, Quantization
from omnirun.errors import ConfigError
from omnirun.hardware.backends import ExportCandidate, choose_backend
from omnirun.hardware.detect import MB, HardwareInfo
from omnirun.plugins import AUTO, Capability

if TYPE_CHECKING:
    from omnirun.config import GenerationConfig, ModelConfig
    from omnirun.engine.source import ModelSource

log = logging.getLogger("omnirun.hardware")  # the package's logger, the name users filter on

BYTES_PER_PARAM = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0, "int4": 0.5}
OVERHEAD = 1.2
"""Weights need this much more than their raw size once loaded (buffers, allocator slack, activations)."""
GPU_HEADROOM = 0.9
"""Plan to fill at most this share of a device's free memory."""


@dataclass(frozen=True)
class ModelSize:
    """How big a model is, for planning: parameter count plus the shape of its KV cache."""

    params: int
    num_layers: int = 0
    kv_dim: int = 0
    """key/value width per layer (num_key_value_heads * head_dim)."""
    dtype: DType | None = None
    """The dtype the checkpoint's weights are stored in, when known (what `hardware.dtype=checkpoint` loads)."""


@dataclass(frozen=True)
class Placement:
    """Where a model runs, decided once before anything loads: the device and the backend, each with a reason.
    `engine.build` makes it; the engine's `plan()` takes the device from it instead of resolving it again."""

    device: Device
    """`cpu`, `cuda` or `mps` (never `auto`)."""
    device_reason: str
    backend: str
    """The registered backend that runs it (never `auto`)."""
    backend_reason: str


@dataclass(frozen=True)
class HardwarePlan:
    device: Device
    """`cpu`, `cuda` or `mps`."""
    dtype: DType
    """`float32`, `float16` or `bfloat16`."""
    quantization: Quantization | None
    """`int8`, `int4` or None."""
    batch_size: int
    device_map: Any = None
    max_memory: dict[str, str] | None = None
    num_threads: int | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    """One sentence per choice: why it was made."""
    backend: str = ""
    """The registered backend that runs the model (`hardware.backend`, resolved)."""
    cpu_int4_decode: bool = False
    """Transformers on the CPU: Linear layers whose fp32 weights lie exactly on a 4-bit grid (dequantized GGUF)
    get an int4 copy for single-stream decoding (`omnirun.engine.hf.optimize`); prefill and batches stay fp32."""


def weight_mb(params: int, precision: str) -> float:
    return params * BYTES_PER_PARAM[precision] / MB


def place(
    request: HardwareConfig,
    hw: HardwareInfo,
    *,
    gguf: bool,
    batched: bool = False,
    candidate: ExportCandidate | None = None,
    needs: Capability | None = Capability.generate,
    task: str | None = None,
    source: ModelSource | None = None,
    generation: GenerationConfig | None = None,
    model: ModelConfig | None = None,
) -> Placement:
    """Resolve the device once and choose the backend for it (see `choose_backend`)."""
    reasons: dict[str, str] = {}
    device = choose_device(request.device, hw, reasons)
    backend, why = choose_backend(
        request,
        hw,
        device=device,
        gguf=gguf,
        batched=batched,
        candidate=candidate,
        needs=needs,
        task=task,
        source=source,
        generation=generation,
        model=model,
    )
    return Placement(device, reasons["device"], backend, why)


def plan(
    request: HardwareConfig,
    size: ModelSize,
    hw: HardwareInfo,
    *,
    placement: Placement | None = None,
    auto: bool = True,
) -> HardwarePlan:
    """Choose dtype, quantization and batch size for a model of `size` on machine `hw`, on the device and
    backend of `placement` (when None: the request's device with the Transformers backend).

    `auto=False` (the engine's manual mode) keeps the request as given and only resolves `auto` values to
    the plain defaults (fp32 on CPU); it never picks quantization by itself. The backend's spec then adds its
    own choices (`BackendSpec.refine_plan`, e.g. Transformers' CPU decode copies, off when `request.optimize`
    is false or in manual mode).
    """
    where = placement or place(replace(request, backend=AUTO), hw, gguf=False)
    device, backend = where.device, where.backend
    spec = plugins.backend(backend)
    reasons = {"backend": where.backend_reason, "device": where.device_reason}
    dtype = choose_dtype(request.dtype, device, hw, reasons, auto, checkpoint=size.dtype)
    quantization = choose_quantization(
        request.quantization, device, dtype, size, hw, reasons, auto, strict=request.quantization_strict
    )
    budget = memory_budget_mb(device, hw)
    batch = choose_batch_size(size, device, quantization or dtype, budget, reasons, spec.batch_cap)
    if request.device_map is not None:
        reasons["device_map"] = f"device_map={request.device_map!r} as requested: accelerate places the weights"
    threads = request.num_threads
    if device == Device.cpu:
        reasons["num_threads"] = (
            f"{threads} CPU threads as requested" if threads else f"default: one thread per core ({hw.cpu_cores})"
        )
    planned = HardwarePlan(
        device=device,
        dtype=dtype,
        quantization=quantization,
        batch_size=batch,
        device_map=request.device_map,
        max_memory=request.max_memory,
        num_threads=threads,
        reasons=reasons,
        backend=backend,
    )
    return spec.refine_plan(planned, request, hw, auto) if spec.refine_plan is not None else planned


def choose_device(requested: Device, hw: HardwareInfo, reasons: dict[str, str]) -> Device:
    if requested == Device.cuda and not hw.cuda:
        raise ConfigError(
            "hardware.device=cuda but no CUDA device is visible (torch.cuda.is_available() is False); "
            "use hardware=auto or hardware=cpu"
        )
    if requested == Device.mps and not hw.mps:
        raise ConfigError("hardware.device=mps but MPS is not available on this machine; use hardware=auto or cpu")
    if requested != Device.auto:
        reasons["device"] = f"{requested} as requested"
        return Device(requested)
    if hw.cuda:
        reasons["device"] = f"CUDA is available ({len(hw.gpus)} x {hw.gpus[0].name})"
        return Device.cuda
    if hw.mps:
        reasons["device"] = "no CUDA device; Apple MPS is available"
        return Device.mps
    reasons["device"] = "no CUDA or MPS device found: running on the CPU"
    return Device.cpu


def choose_dtype(
    requested: DType,
    device: Device,
    hw: HardwareInfo,
    reasons: dict[str, str],
    auto: bool,
    checkpoint: DType | None = None,
) -> DType:
    """The weights' dtype: as requested; the checkpoint's own (`checkpoint`); or the planner's choice (`auto`)."""
    if requested == DType.checkpoint:
        return checkpoint_dtype(checkpoint, device, hw, reasons)
    dtype = planned_dtype(requested, device, hw, reasons, auto)
    if requested == DType.auto:
        reasons["dtype"] += (
            f" (the planner's choice for hardware.dtype=auto; the checkpoint is stored in {checkpoint})"
            if checkpoint
            else " (the planner's choice for hardware.dtype=auto)"
        )
    return dtype


def checkpoint_dtype(checkpoint: DType | None, device: Device, hw: HardwareInfo, reasons: dict[str, str]) -> DType:
    """hardware.dtype=checkpoint: the dtype the weights are stored in (Transformers' `dtype="auto"`)."""
    if checkpoint is None:
        reasons["dtype"] = "float32: hardware.dtype=checkpoint, and the checkpoint does not say its dtype"
        return DType.float32
    if device == Device.cuda and checkpoint == DType.bfloat16 and not all(g.bf16 for g in hw.gpus):
        reasons["dtype"] = "float16: the checkpoint is stored in bfloat16, which this GPU lacks (dtype=checkpoint)"
        return DType.float16
    reasons["dtype"] = f"{checkpoint}: the checkpoint's own dtype (hardware.dtype=checkpoint)"
    return checkpoint


def planned_dtype(requested: DType, device: Device, hw: HardwareInfo, reasons: dict[str, str], auto: bool) -> DType:
    if requested != DType.auto:
        if device == Device.cuda and requested == DType.bfloat16 and not all(g.bf16 for g in hw.gpus):
            raise ConfigError("hardware.dtype=bfloat16 needs a GPU of compute capability 8.0+; use float16")
        reasons["dtype"] = f"{requested} as requested"
        return DType(requested)
    if device == Device.cuda and auto:
        if all(g.bf16 for g in hw.gpus):
            reasons["dtype"] = "bfloat16: the GPU supports it (fp16's speed with fp32's range)"
            return DType.bfloat16
        reasons["dtype"] = "float16: the GPU has no bf16 support"
        return DType.float16
    if device == Device.mps and auto:
        reasons["dtype"] = "float16 on MPS"
        return DType.float16
    reasons["dtype"] = (
        "float32: measured fastest on CPU (bf16 decoded ~10-15% slower here, see benchmarks/)"
        if device == Device.cpu
        else "float32: manual configuration default"
    )
    return DType.float32


def choose_quantization(
    requested: Quantization | None,
    device: Device,
    dtype: DType,
    size: ModelSize,
    hw: HardwareInfo,
    reasons: dict[str, str],
    auto: bool,
    strict: bool = False,
) -> Quantization | None:
    """`auto` picks what fits; int8/int4 are kept, or without bitsandbytes fall back to none with a warning
    (an error when `strict`)."""
    if requested is None:
        reasons["quantization"] = "none requested"
        return None
    if requested == Quantization.auto:
        if not auto:
            raise ConfigError("quantization='auto' needs auto_config=True; pass int8, int4 or None instead")
        return auto_quantization(device, dtype, size, hw, reasons)
    if not hw.bitsandbytes:
        if strict:
            raise ConfigError(
                f"hardware.quantization={requested} needs bitsandbytes, which is not installed; "
                "`pip install bitsandbytes` or set hardware.quantization=null"
            )
        why = "bitsandbytes is not installed (`pip install bitsandbytes`)"
        reasons["quantization"] = quantization_fallback(requested, why)
        return None
    if device == Device.mps:
        raise ConfigError(f"hardware.quantization={requested}: bitsandbytes does not run on MPS; use cpu or cuda")
    reasons["quantization"] = f"{requested} (bitsandbytes) as requested"
    return Quantization(requested)


def quantization_fallback(requested: Quantization | str | None, why: str) -> str:
    """The reason for loading unquantized instead of `requested` (logged as a warning, too)."""
    reason = (
        f"none: {requested} was requested, but {why}; loaded unquantized "
        "(hardware.quantization_strict=true makes this an error)"
    )
    log.warning("hardware.quantization=%s falls back to no quantization: %s", requested, why)
    return reason


def auto_quantization(
    device: Device, dtype: DType, size: ModelSize, hw: HardwareInfo, reasons: dict[str, str]
) -> Quantization | None:
    budget = memory_budget_mb(device, hw)
    need = {p: weight_mb(size.params, p) * OVERHEAD for p in (dtype, "int8", "int4")}
    if need[dtype] <= budget:
        reasons["quantization"] = f"none: {dtype} weights (~{need[dtype]:.0f} MB) fit in {budget:.0f} MB free"
        return None
    if not hw.bitsandbytes or device == Device.mps:
        why = "bitsandbytes is not installed" if not hw.bitsandbytes else "bitsandbytes does not run on MPS"
        reasons["quantization"] = f"none: weights (~{need[dtype]:.0f} MB) exceed {budget:.0f} MB free, but {why}"
        log.warning("quantization=auto falls back to no quantization: %s", why)
        return None
    for choice in (Quantization.int8, Quantization.int4):
        if need[choice] <= budget:
            reasons["quantization"] = (
                f"{choice}: {dtype} weights (~{need[dtype]:.0f} MB) exceed {budget:.0f} MB free; "
                f"{choice} (~{need[choice]:.0f} MB) fits"
            )
            return choice
    reasons["quantization"] = (
        f"int4: even int4 (~{need['int4']:.0f} MB) exceeds {budget:.0f} MB free; expect offload or OOM"
    )
    return Quantization.int4


def memory_budget_mb(device: str, hw: HardwareInfo) -> float:
    if device == Device.cuda:
        return sum(g.free_mb for g in hw.gpus) * GPU_HEADROOM
    return hw.ram_available_mb * GPU_HEADROOM


def choose_batch_size(
    size: ModelSize,
    device: str,
    precision: str,
    budget_mb: float,
    reasons: dict[str, str],
    cap: int = 64,
) -> int:
    """A batch size for `task.batch_size=auto`: as many sequences as the KV cache budget allows, capped.

    The cap is the backend's (`BackendSpec.batch_cap`; 64 by default, measured on this project's 2-core CPU:
    64 mixed-length prompts, 32 new tokens each, sorted by length: Transformers gave 59, 66 and 65 tok/s in
    batches of 16, 32 and 64).
    """
    free = budget_mb - weight_mb(size.params, precision) * OVERHEAD
    if size.num_layers and size.kv_dim:
        kv_bytes = 2 * size.num_layers * size.kv_dim * (4 if precision == DType.float32 else 2)
        per_seq_mb = kv_bytes * 2048 / MB  # room for 2048 tokens of context per sequence
        fits = int(max(free, 0) * 0.5 // per_seq_mb) if per_seq_mb else cap
    else:
        fits = cap
    batch = max(1, min(cap, fits))
    batch = 1 << (batch.bit_length() - 1)  # a power of two
    reasons["batch_size"] = f"{batch}: KV cache for 2048-token sequences within half the free memory, capped at {cap}"
    return batch
