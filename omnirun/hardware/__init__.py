"""Automatic hardware configuration: `detect()` reads the machine, `place()` resolves the device and chooses
the backend once, `plan()` chooses dtype, quantization and batch size on that placement, each choice with a
reason recorded in the manifest."""

from omnirun.hardware.backends import ExportCandidate, choose_backend
from omnirun.hardware.detect import MB, GpuInfo, HardwareInfo, cpu_name, detect, ram_free_mb, torch_int4_kernels
from omnirun.hardware.planner import (
    HardwarePlan,
    ModelSize,
    Placement,
    place,
    plan,
    quantization_fallback,
    weight_mb,
)

__all__ = [
    "MB",
    "ExportCandidate",
    "GpuInfo",
    "HardwareInfo",
    "HardwarePlan",
    "ModelSize",
    "Placement",
    "choose_backend",
    "cpu_name",
    "detect",
    "place",
    "plan",
    "quantization_fallback",
    "ram_free_mb",
    "torch_int4_kernels",
    "weight_mb",
]
