"""The one place where config becomes an engine: place the model once (device and backend, each with a
reason), then construct that backend's engine from the typed configs.

Adding a backend is a folder implementing `engine.base.Engine` plus one line in `BACKENDS`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from omnirun.config import Backend, GenerationConfig, HardwareConfig, ModelConfig, TaskName
from omnirun.engine import capabilities, source
from omnirun.engine.base import Engine
from omnirun.engine.diffusers import DiffusersEngine
from omnirun.engine.hf import HfEngine
from omnirun.engine.llamacpp import LlamaCppEngine
from omnirun.engine.onnxruntime import OrtEngine
from omnirun.engine.onnxruntime import decode as ort_decode
from omnirun.engine.onnxruntime import export as ort_export
from omnirun.errors import ConfigError
from omnirun.hardware import HardwareInfo, Placement, detect, place


class EngineFactory(Protocol):
    """How `build` makes a backend's engine (each backend class's constructor has this signature)."""

    def __call__(
        self,
        model: ModelConfig,
        hardware: HardwareConfig,
        *,
        placement: Placement | None = None,
        info: HardwareInfo | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
    ) -> Engine: ...


BACKENDS: dict[Backend, EngineFactory] = {
    Backend.transformers: HfEngine,
    Backend.llama_cpp: LlamaCppEngine,
    Backend.diffusers: DiffusersEngine,
    Backend.onnxruntime: OrtEngine,
}
"""One line per backend; `hardware.choose_backend` picks the key."""


def build(
    model: ModelConfig,
    hardware: HardwareConfig,
    *,
    generation: GenerationConfig | None = None,
    info: HardwareInfo | None = None,
    batched: bool = False,
    batch_size: int | None = None,
    task: TaskName | None = None,
) -> Engine:
    """The engine for these configs, not loaded yet (`load_tokenizer()` / `load_model()` load it).

    The device is resolved and the backend chosen once, here (`hardware.place`): `auto` takes llama.cpp for a
    GGUF model on the CPU when llama-cpp-python is installed and no Transformers-only option (dtype,
    quantization, device_map) is set; `batched=True` (many prompts decoded together) keeps Transformers,
    faster there on the CPUs measured. For an ordinary Hugging Face causal LM on the CPU, `auto` takes the
    onnxruntime backend's fp32 export under the same conditions (`hardware.backends.onnxruntime_auto_problem`)
    and when the generation settings are ones its search runs (no beam search, no_repeat_ngram_size). The
    choice and its reason land in the engine's `plan.reasons["backend"]`. Raises ConfigError when an explicit
    backend cannot run the request.
    `batch_size` is the prompts per call of the convenience `infer` (None: the plan's).

    `task` (the run's task) is checked against the model before anything loads (`engine.check_task`, which
    reads the model's config only): a model without a head for it is a ConfigError naming the task, the
    model's architectures and what it can serve. llama.cpp serves only the generation tasks, so `auto` takes
    Transformers for the others (e.g. `export`).
    """
    info = info or detect()
    resolved = source.resolve(model.name, model.gguf_file)
    if task == TaskName.image or hardware.backend == Backend.diffusers or source.is_diffusers(resolved):
        placement = place_diffusers(model, hardware, info, task)
        pipeline: Engine = DiffusersEngine(model, hardware, placement=placement, info=info, generation=generation)
        if task is not None:
            pipeline.check_task(task)
        return pipeline
    family = capabilities.task_family(task) if task is not None else capabilities.GENERATE
    candidate = None
    if hardware.backend == Backend.auto and family == capabilities.GENERATE:
        candidate = ort_export.candidate(resolved)
    placement = place(hardware, info, gguf=resolved.is_gguf, batched=batched, candidate=candidate)
    auto_ort = placement.backend == Backend.onnxruntime and hardware.backend == Backend.auto
    if auto_ort and generation is not None and not ort_decode.supports(generation):
        why = f"transformers: onnxruntime not used ({ort_decode.UNSUPPORTED.split(';')[0]})"
        placement = replace(placement, backend=Backend.transformers, backend_reason=why)
    if placement.backend in (Backend.llama_cpp, Backend.onnxruntime) and family != capabilities.GENERATE:
        name = placement.backend
        if hardware.backend == name:
            raise ConfigError(f"backend={name} runs text generation only, not task={task}; use backend=auto")
        why = f"transformers: {name} not used (task={task} needs a Transformers model; {name} only generates)"
        placement = replace(placement, backend=Backend.transformers, backend_reason=why)
    factory = BACKENDS[placement.backend]
    engine = factory(model, hardware, placement=placement, info=info, generation=generation, batch_size=batch_size)
    if task is not None:
        engine.check_task(task)
    return engine


def place_diffusers(
    model: ModelConfig, hardware: HardwareConfig, info: HardwareInfo, task: TaskName | None
) -> Placement:
    """The device for a diffusers pipeline; ConfigError when the model is not one or another backend is asked."""
    if hardware.backend not in (Backend.auto, Backend.diffusers):
        raise ConfigError(
            f"task=image runs on the diffusers backend, not hardware.backend={hardware.backend}; use auto"
        )
    if not source.is_diffusers(source.resolve(model.name, model.gguf_file)):
        raise ConfigError(
            f"task={task or 'image'} needs a diffusers pipeline (a folder or hub id with model_index.json), "
            f"and model {model.name!r} is not one"
        )
    placement = place(replace(hardware, backend=Backend.transformers), info, gguf=False)
    return replace(placement, backend=Backend.diffusers, backend_reason="diffusers: the model is a diffusers pipeline")
