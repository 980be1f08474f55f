"""The two extension seams: backends and tasks, each a spec registered through a Python entry point.

A backend folder exports one `BackendSpec` (its name, the factory that builds its engine, the capabilities it
implements, why it cannot serve a request, whether `hardware.backend=auto` should take it and why, its batch
cap, its optional dependencies); a task module exports one `TaskSpec` (its name, its runner, the capability it
needs from the engine, its record fields, its options). The built-in ones register exactly as third-party ones
do, in `pyproject.toml`:

    [project.entry-points."omnirun.backends"]
    echo = "omnirun_echo:BACKEND"
    [project.entry-points."omnirun.tasks"]
    count_words = "omnirun_echo:COUNT_WORDS"

The core (`engine.build`, `hardware`, the config checks, the task table) loops over what is registered here and
names no backend or task itself. `examples/omnirun-echo` is a complete plugin package.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from omnirun.errors import ConfigError

if TYPE_CHECKING:
    from omnirun.config import GenerationConfig, HardwareConfig, ModelConfig
    from omnirun.engine.base import EngineBase
    from omnirun.engine.source import ModelSource
    from omnirun.hardware.detect import HardwareInfo
    from omnirun.hardware.planner import HardwarePlan
    from omnirun.inputs.records import InputSpec
    from omnirun.results.schema import RunMetrics
    from omnirun.tasks.base import Job

log = logging.getLogger(__name__)

BACKENDS_GROUP = "omnirun.backends"
TASKS_GROUP = "omnirun.tasks"
AUTO = "auto"
"""`hardware.backend=auto`: the registered backends choose among themselves (`hardware.backends`)."""


class Capability(StrEnum):
    """What an engine implements, and what a task needs from one (`engine.base` has one Protocol for each)."""

    generate = "generate"
    """Text generation: tokenize, generate, stream, chat (`engine.base.TextGenerator`)."""
    analyze = "analyze"
    """The tasks beyond generation over a batch of records: embed, classify, ... (`engine.base.Analyzer`)."""
    export = "export"
    """Writing the loaded model out: safetensors, ONNX, the hub (`engine.base.Exporter`)."""


# ------------------------------------------------------------------------------------------------ backends
@dataclass(frozen=True)
class BackendRequest:
    """What a backend is asked to serve, as its spec's `problem` / `auto_problem` / `claims` see it."""

    hardware: HardwareConfig
    info: HardwareInfo
    device: str
    """The resolved device (`cpu`, `cuda`, `mps`; never `auto`)."""
    gguf: bool
    """The model is a GGUF file."""
    needs: Capability | None = Capability.generate
    """What the run's task needs from the engine (None: no model at all)."""
    task: str | None = None
    batched: bool = False
    """Many prompts decoded together (`task.batch_size` not 1)."""
    source: ModelSource | None = None
    """The resolved model, when known (None in planner tests that simulate a request)."""
    model_facts: Any = None
    """What `auto` may weigh about an ordinary Hugging Face model without loading it (`hardware.ExportCandidate`:
    its architecture, parameter count, free cache disk); None when unknown."""
    generation: GenerationConfig | None = None
    model: ModelConfig | None = None
    """The model's config, when known (its loading options are checked against `BackendSpec.honours`)."""


MODEL_OPTIONS = ("config_overrides", "num_labels", "init", "attn_implementation")
"""`model.*` loading options a backend may not honour; set to anything but their default, they must be."""


def model_options_set(model: ModelConfig | None) -> list[str]:
    """The `model.*` loading options this config sets (differing from the schema's defaults)."""
    if model is None:
        return []
    defaults = type(model)()
    return [f"model.{key}" for key in MODEL_OPTIONS if getattr(model, key) != getattr(defaults, key)]


EngineFactory = Callable[..., "EngineBase"]
"""`factory(model: ModelConfig, hardware: HardwareConfig, *, placement, info, generation, batch_size)`."""


def _serves_everything(request: BackendRequest) -> str | None:
    return None


@dataclass(frozen=True)
class BackendSpec:
    """One backend, as its folder declares it."""

    name: str
    """What `hardware.backend` names it."""
    factory: EngineFactory
    """Builds its engine (not loaded): `factory(model, hardware, placement=, info=, generation=, batch_size=)`."""
    capabilities: frozenset[Capability]
    """What its engine implements; a task needing anything else never runs on it."""
    summary: str = ""
    """One line for `--help`-style listings and errors."""
    problem: Callable[[BackendRequest], str | None] = _serves_everything
    """Why it cannot serve this request (a clause, with the way out), or None when it can."""
    auto_problem: Callable[[BackendRequest], str | None] | None = None
    """Why `auto` does not take it for this request, or None when `auto` should; None (the field): `auto` never
    takes it unless it `claims` the model."""
    auto_reason: str = ""
    """The sentence recorded in the manifest when `auto` takes it (what was measured, where)."""
    auto_priority: int = 0
    """`auto` weighs higher priorities first; the fallback every request reaches has the lowest."""
    claims: Callable[[BackendRequest], bool] | None = None
    """True for a model only this backend runs (a diffusers pipeline): `auto` takes it, others refuse it."""
    batch_cap: int = 64
    """The most prompts per batch `task.batch_size=auto` gives it."""
    refine_plan: Callable[[HardwarePlan, HardwareConfig, HardwareInfo, bool], HardwarePlan] | None = None
    """Backend-specific choices on top of the common plan (e.g. Transformers' CPU int4 decoding copies), each
    with its reason; called with (plan, request, machine, auto)."""
    extras: tuple[str, ...] = ()
    """The pip extras it needs (`pip install 'omnirun[<extra>]'`)."""
    task_options: tuple[str, ...] = ()
    """The `task.*` keys its factory takes as keyword arguments (e.g. a server's `concurrency`)."""
    local_model: bool = True
    """`model.name` names weights on this machine or the hub (resolved before placing); false: a name another
    process serves (the `openai` backend), passed through as it is."""
    honours: frozenset[str] | None = None
    """The `model.*` loading options (`MODEL_OPTIONS`) it honours; None: all of them. A request setting another is
    refused when this backend is asked for, and passed over by `auto`."""


# --------------------------------------------------------------------------------------------------- tasks
Runner = Callable[["Job"], "RunMetrics"]


@dataclass(frozen=True)
class TaskSpec:
    """One task, as its module declares it."""

    name: str
    """What `task=` / `task.name` names it."""
    run: Runner
    """Runs a job into its run directory and returns the run's metrics (per-record tasks: `tasks.PerRecord`)."""
    needs: Capability | None = Capability.generate
    """What it needs from the engine; None: it loads no model."""
    inputs: InputSpec | None = None
    """The fields it reads from each record; None: a generation task (prompt or messages)."""
    summary: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Its `task` group option's values that differ from its config class's defaults (e.g. `batch_size`)."""
    config: type | None = None
    """Its `task.*` schema: `omnirun.task_config.TaskConfig` (None) or a subclass adding the task's own options,
    each with its default and docstring; `task=<name>` composes an instance of it, so an option another task
    does not have is refused at compose time."""
    reads_input: bool = True
    """The runner reads `input.*` into records for it (false: the task reads its input itself, e.g. `score`,
    whose input is a run directory)."""
    head_family: str | None = None
    """The model head it needs (`engine.capabilities` families: `classify`, `qa`, ...); None: by `needs`."""


# ---------------------------------------------------------------------------------------------- registry
BROKEN: dict[str, str] = {}
"""Entry points that failed to load, by `<group>:<name>`: why (raised only when that name is asked for)."""


def _load(group: str, kind: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            spec = _load_one(ep, group, kind)
        except ConfigError as exc:  # one broken plugin must not take the others down
            BROKEN[f"{group}:{ep.name}"] = str(exc)
            log.warning("%s", exc)
            continue
        if spec.name in found:
            log.warning("%s %r is registered twice; keeping %s", group, spec.name, found[spec.name])
            continue
        found[spec.name] = spec
    if not found:
        raise ConfigError(
            f"no {group} are registered: omnirun's own entry points are missing; reinstall it (pip install -e .)"
        )
    return found


def _load_one(ep: EntryPoint, group: str, kind: type) -> Any:
    try:
        spec = ep.load()
    except Exception as exc:
        raise ConfigError(f"the {group} entry point {ep.name} = {ep.value} failed to load: {exc}") from None
    if not isinstance(spec, kind):
        raise ConfigError(f"the {group} entry point {ep.name} = {ep.value} is not a {kind.__name__}")
    named = getattr(spec, "name", None)
    if named != ep.name:
        raise ConfigError(f"the {group} entry point {ep.name} names a spec called {named!r}; make them equal")
    return spec


@functools.cache
def backends() -> dict[str, BackendSpec]:
    """Every installed backend, by name."""
    return _load(BACKENDS_GROUP, BackendSpec)


@functools.cache
def tasks() -> dict[str, TaskSpec]:
    """Every installed task, by name."""
    return _load(TASKS_GROUP, TaskSpec)


def backend(name: str, key: str = "hardware.backend") -> BackendSpec:
    """The spec of backend `name`; ConfigError listing the installed ones when none is called that."""
    found = backends().get(str(name))
    if found is None:
        _raise_broken(BACKENDS_GROUP, str(name))
        raise ConfigError(f"{key} must be {AUTO} or an installed backend ({', '.join(backends())}), got {name!r}")
    return found


def task(name: str, key: str = "task.name") -> TaskSpec:
    """The spec of task `name`; ConfigError listing the installed ones when none is called that."""
    found = tasks().get(str(name))
    if found is None:
        _raise_broken(TASKS_GROUP, str(name))
        raise ConfigError(f"{key} must be an installed task ({', '.join(tasks())}), got {name!r}")
    return found


def _raise_broken(group: str, name: str) -> None:
    why = BROKEN.get(f"{group}:{name}")
    if why is not None:
        raise ConfigError(why)


def serving(capability: Capability | None) -> list[str]:
    """The backends that implement `capability`."""
    return [name for name, spec in backends().items() if capability is None or capability in spec.capabilities]


__all__ = [
    "AUTO",
    "BackendRequest",
    "BackendSpec",
    "Capability",
    "EngineFactory",
    "TaskSpec",
    "backend",
    "backends",
    "serving",
    "task",
    "tasks",
]
