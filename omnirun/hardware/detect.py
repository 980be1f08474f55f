"""Detect the machine: CPU, RAM, CUDA GPUs, MPS and the optional libraries the planner cares about.

Explicit probes only; nothing here decides anything (see `omnirun.hardware.planner`).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

MB = 1024**2


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_mb: float
    free_mb: float
    bf16: bool


@dataclass(frozen=True)
class HardwareInfo:
    """What the planner needs to know about a machine."""

    cpu_name: str
    cpu_cores: int
    ram_total_mb: float
    ram_available_mb: float
    gpus: tuple[GpuInfo, ...] = ()
    mps: bool = False
    bitsandbytes: bool = False
    """bitsandbytes is importable (0.45+ quantizes on CUDA and, from 0.48, on CPU)."""
    llama_cpp: bool = False
    """llama-cpp-python is importable (the `llama.cpp` backend for GGUF files)."""
    int4_kernels: bool = False
    """torch has its CPU int4 weight-only matmul (`_weight_int4pack_mm_for_cpu`, torch 2.6+)."""

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)


def detect() -> HardwareInfo:
    """Read the current machine (CPU, RAM, CUDA GPUs, MPS, bitsandbytes, llama-cpp-python). torch is imported
    only when a GPU may be present (or it is already loaded): a CPU-only llama.cpp run never pays for it."""
    import psutil

    torch = import_torch() if "torch" in sys.modules or accelerator_possible() else None
    gpus: list[GpuInfo] = []
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            props = torch.cuda.get_device_properties(i)
            gpus.append(GpuInfo(props.name, total / MB, free / MB, bf16=props.major >= 8))
    mem = psutil.virtual_memory()
    mps = bool(torch is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return HardwareInfo(
        cpu_name=cpu_name(),
        cpu_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        ram_total_mb=mem.total / MB,
        ram_available_mb=mem.available / MB,
        gpus=tuple(gpus),
        mps=mps,
        bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        llama_cpp=importlib.util.find_spec("llama_cpp") is not None,
        int4_kernels=torch is not None and torch_int4_kernels(),
    )


def ram_free_mb() -> float:
    """The memory this process could still allocate now, in MB (`psutil.virtual_memory().available`): what
    an input's or a model's size is checked against before anything is allocated for it."""
    import psutil

    return float(psutil.virtual_memory().available) / MB


def import_torch() -> Any:
    import torch

    return torch


def accelerator_possible() -> bool:
    """False when this machine certainly has no CUDA, ROCm or MPS device (no driver nodes, not macOS)."""
    if sys.platform == "darwin":
        return True
    nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")
    return any(os.path.exists(node) for node in nodes)


def torch_int4_kernels() -> bool:
    """Whether torch has its CPU int4 weight-only matmul (torch 2.6+)."""
    import torch

    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
