"""`DiffusersEngine`: a diffusers text-to-image pipeline (a folder or hub id with `model_index.json`) serving
task=image. It implements the engine Protocol; the text-generation methods refuse with one line, since a
diffusion pipeline does not generate text.

Each record gets its own `torch.Generator` seeded with `seed + record index`, so a rerun, a resumed run or a
different batch size gives the same picture for the same record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Self

from omnirun import hardware, rundir
from omnirun.choices import Backend
from omnirun.config import (
    Device,
    DType,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelType,
    TaskConfig,
    TaskName,
)
from omnirun.engine import source as models
from omnirun.engine.base import (
    NOT_LOADED,
    Answer,
    Completion,
    ConvenienceAPI,
    MemoryReport,
    ParameterCount,
    SavedModel,
    StreamHandle,
)
from omnirun.errors import ConfigError
from omnirun.hardware import HardwareInfo, HardwarePlan, Placement
from omnirun.task_config import ImageConfig, options_as

log = logging.getLogger(__name__)
NO_TEXT = "a diffusers pipeline makes images, not text; use task=image (or a Transformers model for text tasks)"


class DiffusersEngine(ConvenienceAPI):
    """Text-to-image through `diffusers.DiffusionPipeline`, on the placement `engine.build` chose."""

    def __init__(
        self,
        model: ModelConfig,
        hardware: HardwareConfig,
        *,
        placement: Placement | None = None,
        info: HardwareInfo | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model_config, self.hardware_config = model, hardware
        self.placement, self.info = placement, info
        self.default_generation = generation or GenerationConfig()
        self.batch_size = batch_size
        self.model_type: ModelType | None = None
        self.tokenizer: Any = None
        self.pipe: Any = None
        self.plan: HardwarePlan | None = None
        self.source: models.ModelSource | None = None

    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def is_loaded(self) -> bool:
        return self.pipe is not None

    @property
    def device(self) -> Device:
        return self.plan.device if self.plan else Device.cpu

    @property
    def max_context(self) -> int | None:
        return None

    def check_task(self, task: TaskName) -> None:
        if task not in (TaskName.image, TaskName.export):
            raise ConfigError(f"task={task}: model {self.model_name!r} is a diffusers pipeline; {NO_TEXT}")

    def load_tokenizer(self) -> Any:
        return None

    def load_model(self) -> Self:
        if self.pipe is not None:
            return self
        import diffusers
        import torch

        self.source = models.resolve(self.model_config.name)
        plan = self._plan()
        dtype = getattr(torch, str(plan.dtype))
        try:
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                self.source.path, dtype=dtype, cache_dir=self.model_config.cache_dir
            )
        except Exception as exc:
            raise models.describe_load_failure(self.source, exc) from exc
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.plan = pipe.to(str(plan.device)), plan
        if plan.num_threads:
            torch.set_num_threads(plan.num_threads)
        return self

    def _plan(self) -> HardwarePlan:
        info = self.info or hardware.detect()
        placement = self.placement or hardware.place(self.hardware_config, info, gguf=False)
        device = placement.device
        dtype = self.hardware_config.dtype
        if dtype in (DType.auto, DType.checkpoint):
            dtype = DType.float16 if device == Device.cuda else DType.float32
        reasons = {
            "backend": placement.backend_reason,
            "device": placement.device_reason,
            "dtype": f"{dtype}: half precision on CUDA, float32 elsewhere (diffusers' usual choice)",
        }
        threads = self.hardware_config.num_threads
        return HardwarePlan(device, dtype, None, 1, num_threads=threads, reasons=reasons, backend=Backend.diffusers)

    def unload_model(self) -> None:
        from omnirun.engine.hf.loading import release_memory

        self.pipe = None
        release_memory()

    def analyze(
        self,
        task: TaskName,
        items: list[dict[str, Any]],
        options: TaskConfig,
        params: GenerationConfig | None = None,
        seed: int | list[int] | None = None,
    ) -> list[Answer]:
        """One image per item: `prompt`, optional `negative_prompt`. `seed` is one seed per item (the task layer
        gives `seed + record index`), or one int for the batch, item i then seeded with `seed + i`; each item's
        generator is seeded alone, so its picture does not depend on the batch it is in."""
        import torch

        self.check_task(task)
        if self.pipe is None:
            raise RuntimeError(NOT_LOADED)
        seeds = item_seeds(seed, len(items))
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        negative = [i.get("negative_prompt") or "" for i in items]
        image = options_as(options, ImageConfig)
        kwargs: dict[str, Any] = {
            "prompt": [i["prompt"] for i in items],
            "num_inference_steps": image.num_inference_steps,
            "guidance_scale": image.guidance_scale,
            "generator": generators,
        }
        if any(negative):
            kwargs["negative_prompt"] = negative
        if image.height is not None:
            kwargs["height"] = image.height
        if image.width is not None:
            kwargs["width"] = image.width
        start = time.perf_counter()
        images = self.pipe(**kwargs).images
        seconds = time.perf_counter() - start
        return [Answer({}, images={rundir.IMAGES: [image]}, e2e_s=seconds) for image in images]

    def parameters(self) -> ParameterCount | None:
        if self.pipe is None:
            return None
        total = sum(
            p.numel() for c in self.pipe.components.values() if hasattr(c, "parameters") for p in c.parameters()
        )
        return ParameterCount(int(total), None)

    def memory(self) -> MemoryReport:
        import psutil

        footprint = None
        if self.pipe is not None:
            parts = [c for c in self.pipe.components.values() if hasattr(c, "parameters")]
            footprint = sum(p.numel() * p.element_size() for c in parts for p in c.parameters()) / hardware.MB
        return MemoryReport(footprint, psutil.Process().memory_info().rss / hardware.MB, None, None)

    def save(self, path: str | Path) -> SavedModel:
        from omnirun.config import ExportFormat

        if self.pipe is None:
            raise RuntimeError(NOT_LOADED)
        folder = Path(path)
        self.pipe.save_pretrained(folder)
        files = tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))
        return SavedModel(folder, ExportFormat.safetensors, files)

    def export_onnx(self, path: str | Path) -> SavedModel:
        raise ConfigError("export.format=onnx: diffusers pipelines are not exported to ONNX here; use safetensors")

    def push_to_hub(self, repo: str, folder: str | Path | None = None, *, private: bool = False) -> str:
        from omnirun.engine.hf import export

        return export.push_to_hub(repo, folder, self.save, private=private)

    # ------------------------------------------------------------------ text generation: refused
    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        raise ConfigError(NO_TEXT)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        raise ConfigError(NO_TEXT)

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> StreamHandle:
        raise ConfigError(NO_TEXT)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        raise ConfigError(NO_TEXT)

    def has_chat_template(self) -> bool:
        return False

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        raise ConfigError(NO_TEXT)

    def argmax_next(self, ids: list[int]) -> list[int]:
        raise ConfigError(NO_TEXT)


def item_seeds(seed: int | list[int] | None, count: int) -> list[int]:
    """One seed per item: the list as given (its length must be `count`), else `seed + i` (0 + i for None)."""
    if isinstance(seed, list):
        if len(seed) != count:
            raise ValueError(f"{len(seed)} seeds for a batch of {count} items; give one seed per item")
        return [int(s) for s in seed]
    return [(seed or 0) + i for i in range(count)]
