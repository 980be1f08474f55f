"""Inference engines. `create()` picks the backend; `TransformersEngine` is the only module that knows
Transformers' loading arguments, `LlamaCppEngine` (optional, `pip install 'omnirun[llama-cpp]'`) runs GGUF files
through llama.cpp."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omnirun import hardware, models
from omnirun.config import Device, DType, HardwareConfig, Quantization
from omnirun.engine.base import Completion, Engine, MemoryReport
from omnirun.engine.transformers import TransformersEngine, _enum

if TYPE_CHECKING:
    from omnirun.engine.llamacpp import LlamaCppEngine

__all__ = ["Completion", "Engine", "MemoryReport", "TransformersEngine", "create"]


def create(
    model_id: str = models.BUNDLED,
    *,
    backend: str = "auto",
    optimize: bool = True,
    auto_config: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    quantization: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    gguf_file: str | None = None,
    num_threads: int | None = None,
    batch_size: int | None = None,
    hardware_info: hardware.HardwareInfo | None = None,
    batched: bool = False,
    **transformers_kwargs: Any,
) -> TransformersEngine | LlamaCppEngine:
    """The fastest engine for this model and machine, or the one asked for (`backend`: `auto`,
    `transformers`, `llama.cpp`). Auto takes llama.cpp for a GGUF model on the CPU when llama-cpp-python is
    installed and no Transformers-only option (dtype, quantization, device_map) is set; the choice and its
    reason land in the engine's `plan.reasons["backend"]`. `batched=True` (many prompts decoded together, as
    task=batch does) keeps Transformers, faster there on the CPUs measured. `optimize=False` or
    `auto_config=False` keep plain Transformers (fp32 on the CPU). Other keywords go to `TransformersEngine`."""
    info = hardware_info or hardware.detect()
    request = HardwareConfig(
        device=_enum("device", Device, device),
        dtype=_enum("dtype", DType, dtype),
        quantization=None if quantization is None else _enum("quantization", Quantization, quantization),
        device_map=device_map,
        num_threads=num_threads,
    )
    gguf = models.resolve(model_id, gguf_file).is_gguf
    chosen, reason = hardware.choose_backend(
        backend, request, info, gguf=gguf, optimize=optimize and auto_config, batched=batched
    )
    generation = transformers_kwargs.pop("generation", None)
    if chosen == "llama.cpp":
        from omnirun.engine.llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model_id,
            gguf_file=gguf_file,
            num_threads=num_threads,
            batch_size=batch_size,
            generation=generation,
            hardware_info=info,
            backend_reason=reason,
        )
    return TransformersEngine(
        model_id,
        auto_config=auto_config,
        device=device,
        dtype=dtype,
        quantization=quantization,
        device_map=device_map,
        gguf_file=gguf_file,
        num_threads=num_threads,
        batch_size=batch_size,
        generation=generation,
        hardware_info=info,
        optimize=optimize,
        backend_reason=reason,
        **transformers_kwargs,
    )
