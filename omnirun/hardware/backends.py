"""Which backend serves a request: the registered backends' specs (`omnirun.plugins`) weighed in one place.

An explicit `hardware.backend` is honoured or refused in one line (the backend's own `problem` says why);
`auto` takes the backend that claims the model (one only it runs), else the first, by priority, whose
`auto_problem` has no objection, recording why each one before it was passed over. Nothing here names a backend:
each backend's knowledge lives in its own folder's spec."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omnirun import plugins
from omnirun.config import Device, HardwareConfig
from omnirun.errors import ConfigError
from omnirun.hardware.detect import HardwareInfo
from omnirun.plugins import AUTO, BackendRequest, BackendSpec, Capability

if TYPE_CHECKING:
    from omnirun.config import GenerationConfig, ModelConfig
    from omnirun.engine.source import ModelSource

CAPABILITY_WORDS = {
    Capability.generate: "text generation",
    Capability.analyze: "the analysis tasks (embed, classify, ...)",
    Capability.export: "export",
}


@dataclass(frozen=True)
class ExportCandidate:
    """What `auto` may weigh about an ordinary (non-GGUF) Hugging Face model without loading it."""

    architecture: str | None
    """`architectures[0]` of its config (None when its config is not on this machine or lists none)."""
    params: int | None
    """Its parameter count, from the safetensors headers (None when unknown)."""
    free_disk_bytes: int
    """Free space in omnirun's model cache (where a converted copy would go)."""


def choose_backend(
    request: HardwareConfig,
    hw: HardwareInfo,
    *,
    device: Device,
    gguf: bool,
    batched: bool = False,
    candidate: ExportCandidate | None = None,
    needs: Capability | None = Capability.generate,
    task: str | None = None,
    source: ModelSource | None = None,
    generation: GenerationConfig | None = None,
    model: ModelConfig | None = None,
) -> tuple[str, str]:
    """The backend for `request.backend` on the resolved `device`, and why. Raises ConfigError when an explicit
    backend cannot serve the request, or when the backend that alone runs this model cannot."""
    asked = BackendRequest(request, hw, device, gguf, needs, task, batched, source, candidate, generation, model)
    specs = by_priority(plugins.backends().values())
    claimer = next((s for s in specs if s.claims is not None and s.claims(asked)), None)
    if str(request.backend) != AUTO:
        return explicit(plugins.backend(str(request.backend)), asked, claimer)
    if claimer is not None:
        problem = claimer.problem(asked)
        if problem:
            raise ConfigError(f"{problem}; use another model or task")
        return claimer.name, claimer.auto_reason or f"{claimer.name}: the model runs on it alone"
    passed: list[str] = []
    for spec in specs:
        if spec.auto_problem is None:
            continue
        problem = missing(spec, needs, task) or unhonoured(spec, asked) or spec.auto_problem(asked)
        if problem is None:
            reason = spec.auto_reason or f"{spec.name}: the default backend"
            return spec.name, f"{spec.name}: {'; '.join(passed)}" if passed and not spec.auto_reason else reason
        passed.append(f"{spec.name} not used ({problem})")
    raise ConfigError(
        f"hardware.backend=auto: no installed backend serves this request ({'; '.join(passed)}); "
        "set hardware.backend explicitly"
    )


def explicit(spec: BackendSpec, asked: BackendRequest, claimer: BackendSpec | None) -> tuple[str, str]:
    """`hardware.backend=<spec.name>` as requested, or a one-line ConfigError saying why it cannot be."""
    if claimer is not None and claimer is not spec:
        problem = claimer.problem(asked)
        raise ConfigError(problem or f"the model runs on the {claimer.name} backend only, not {spec.name}; use auto")
    lacking = missing(spec, asked.needs, asked.task)
    if lacking:
        can = " and ".join(CAPABILITY_WORDS[c] for c in sorted(spec.capabilities))
        others = alternatives(spec, asked)
        instead = f" (here: {', '.join(others)})" if others else ""
        raise ConfigError(
            f"hardware.backend={spec.name} runs {can} only, not task={asked.task}; use hardware.backend=auto{instead}"
        )
    problem = unhonoured(spec, asked) or spec.problem(asked)
    if problem:
        others = alternatives(spec, asked)
        instead = f" (here: {' or '.join(f'hardware.backend={name}' for name in others)})" if others else ""
        raise ConfigError(f"hardware.backend={spec.name}: {problem}; use hardware.backend=auto{instead}")
    return spec.name, f"{spec.name} as requested"


def alternatives(spec: BackendSpec, asked: BackendRequest) -> list[str]:
    """The other backends that could run this request (asked only when refusing `spec`)."""
    return [s.name for s in by_priority(plugins.backends().values()) if s is not spec and serves(s, asked)]


def serves(spec: BackendSpec, asked: BackendRequest) -> bool:
    """`spec` can run this request (what an error suggests instead of the backend that cannot)."""
    if missing(spec, asked.needs, asked.task) is not None or (unhonoured(spec, asked) or spec.problem(asked)):
        return False
    return spec.claims is None or spec.claims(asked)


def unhonoured(spec: BackendSpec, asked: BackendRequest) -> str | None:
    """The `model.*` options the request sets that `spec` would ignore, as a clause; None when it honours all."""
    if spec.honours is None:
        return None
    ignored = [key for key in plugins.model_options_set(asked.model) if key.split(".", 1)[1] not in spec.honours]
    return f"{'/'.join(ignored)} set, which {spec.name} does not honour" if ignored else None


def missing(spec: BackendSpec, needs: Capability | None, task: str | None) -> str | None:
    """Why `spec` cannot run the task at all (it lacks the capability), or None."""
    if needs is None or needs in spec.capabilities:
        return None
    return f"task={task} needs {CAPABILITY_WORDS[needs]}, which {spec.name} does not run"


def by_priority(specs: Iterable[BackendSpec]) -> list[BackendSpec]:
    return sorted(specs, key=lambda s: -s.auto_priority)
