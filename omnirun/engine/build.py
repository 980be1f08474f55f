"""The one place where config becomes an engine: place the model once (device and backend, each with a
reason: `hardware.place` weighs the registered backends' specs), then let that backend's spec build its engine.

No backend is named here: a backend is a folder exporting an `omnirun.plugins.BackendSpec`, registered through
the `omnirun.backends` entry points (pyproject.toml).
"""

from __future__ import annotations

from typing import cast

from omnirun import plugins
from omnirun.config import GenerationConfig, HardwareConfig, ModelConfig, TaskConfig, TaskName
from omnirun.engine import source
from omnirun.engine.base import Engine
from omnirun.engine.null import NullEngine
from omnirun.hardware import HardwareInfo, detect, place
from omnirun.plugins import Capability, TaskSpec


def build(
    model: ModelConfig,
    hardware: HardwareConfig,
    *,
    generation: GenerationConfig | None = None,
    info: HardwareInfo | None = None,
    batched: bool = False,
    batch_size: int | None = None,
    task: str | None = None,
    task_config: TaskConfig | None = None,
) -> Engine:
    """The engine for these configs, not loaded yet (`load_tokenizer()` / `load_model()` load it).

    The device is resolved and the backend chosen once, here (`hardware.place`): an explicit
    `hardware.backend` is honoured or refused in one line; `auto` takes the backend that claims the model (a
    pipeline only it runs), else the first registered backend, by priority, whose spec has no objection to the
    request (README, Backends, says what each built-in backend's spec asks for). `batched=True` (many prompts
    decoded together) and the generation settings are part of the request. The choice and its reason land in
    `plan.reasons["backend"]`. `batch_size` is the prompts per call of the convenience `infer` (None: the plan's).

    `task_config` (the run's `task` group) supplies the `task.*` options the backend's spec asks for
    (`BackendSpec.task_options`). `task` (the run's task) says what the engine must implement (`TaskSpec.needs`;
    a task that needs no model gets a `NullEngine`) and is checked against the model before anything loads
    (`engine.check_task`, which reads the model's config only): a model without a head for it is a ConfigError
    naming the task, the model's architectures and what it can serve.
    """
    spec = plugins.task(task) if task is not None else None
    if spec is not None and spec.needs is None:
        return cast(Engine, NullEngine(model, spec.name))
    info = info or detect()
    asked = plugins.backend(hardware.backend) if hardware.backend != plugins.AUTO else None
    if asked is not None and not asked.local_model:
        resolved = source.ModelSource(model.name, model.name, "served")
    else:
        resolved = source.resolve(model.name, model.gguf_file)
    needs = spec.needs if spec is not None else None  # no task (the Python API): any backend that loads it
    placement = place(
        hardware,
        info,
        gguf=resolved.is_gguf,
        batched=batched,
        needs=needs,
        task=task,
        source=resolved,
        generation=generation,
        model=model,
    )
    backend = plugins.backend(placement.backend)
    options = {key: getattr(task_config, key) for key in backend.task_options} if task_config is not None else {}
    engine = cast(
        Engine,
        backend.factory(
            model, hardware, placement=placement, info=info, generation=generation, batch_size=batch_size, **options
        ),
    )
    if spec is not None:
        engine.check_task(head_task(spec))
    return engine


def head_task(spec: TaskSpec) -> TaskName:
    """The task whose model head `spec` needs (a plugin task is checked as the built-in task it resembles)."""
    if spec.name in TaskName.__members__.values():
        return TaskName(spec.name)
    if spec.head_family is not None:
        return TaskName(spec.head_family)
    return TaskName.export if spec.needs == Capability.export else TaskName.generate
