"""The engine of a task that loads no model (`TaskSpec.needs=None`: scoring files, counting words): it keeps
the run's shape (a plan with a batch size, memory figures, load and unload) without touching a backend."""

from __future__ import annotations

from typing import Any, Self

from omnirun.config import Device, DType, ModelConfig, ModelType
from omnirun.engine.base import MemoryReport, ParameterCount
from omnirun.hardware import MB, HardwarePlan

BATCH_SIZE = 64
"""Records per batch under `task.batch_size=auto` (no model memory to plan around)."""


class NullEngine:
    """No model: `load_model` and `unload_model` do nothing, and the plan says why."""

    def __init__(self, model: ModelConfig, task: str) -> None:
        self.model_name = model.name
        self.plan: HardwarePlan | None = HardwarePlan(
            device=Device.cpu,
            dtype=DType.float32,
            quantization=None,
            batch_size=BATCH_SIZE,
            reasons={"backend": f"none: task={task} loads no model"},
            backend="none",
        )
        self.model_type: ModelType | None = None
        self.source: Any = None
        self.is_loaded = False

    @property
    def device(self) -> Device:
        return Device.cpu

    def check_task(self, task: str) -> None:
        return None

    def load_tokenizer(self) -> Any:
        return None

    def load_model(self) -> Self:
        self.is_loaded = True
        return self

    def unload_model(self) -> None:
        self.is_loaded = False

    def memory(self) -> MemoryReport:
        import psutil

        rss = psutil.Process().memory_info().rss / MB
        return MemoryReport(model_footprint_mb=None, rss_mb=rss, cuda_allocated_mb=None, cuda_reserved_mb=None)

    def parameters(self) -> ParameterCount | None:
        return None
