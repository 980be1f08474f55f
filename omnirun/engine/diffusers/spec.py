"""The diffusers backend as `omnirun.plugins` sees it: text-to-image pipelines (a folder with model_index.json).
It claims such a model, and `task=image`: no other backend runs either."""

from __future__ import annotations

from omnirun.engine import source as models
from omnirun.engine.diffusers.engine import DiffusersEngine
from omnirun.plugins import BackendRequest, BackendSpec, Capability

NAME = "diffusers"
TASKS = frozenset({"image", "export"})
"""What a diffusers pipeline serves: text-to-image, and saving the pipeline."""


def is_pipeline(request: BackendRequest) -> bool:
    return request.source is not None and models.is_diffusers(request.source)


def claims(request: BackendRequest) -> bool:
    """A diffusers pipeline runs here only, and so does task=image."""
    return request.task == "image" or is_pipeline(request)


def problem(request: BackendRequest) -> str | None:
    name = request.source.name if request.source is not None else "?"
    if not is_pipeline(request):
        return (
            f"task={request.task or 'image'} needs a diffusers pipeline (a folder or hub id with model_index.json), "
            f"and model {name!r} is not one"
        )
    if request.task is not None and request.task not in TASKS:
        return f"task={request.task}: model {name!r} is a diffusers pipeline; it serves task=image and task=export"
    return None


BACKEND = BackendSpec(
    name=NAME,
    factory=DiffusersEngine,
    capabilities=frozenset({Capability.analyze, Capability.export}),
    summary="diffusers text-to-image pipelines (Stable Diffusion and the others DiffusionPipeline loads)",
    problem=problem,
    claims=claims,
    auto_reason="diffusers: the model is a diffusers pipeline",
)
