"""The `openai` backend as `omnirun.plugins` sees it: text generation (and `embed`) by a server at
`model.endpoint`.
`auto` never takes it: a run goes to a server only when `hardware.backend=openai` says so."""

from __future__ import annotations

from omnirun.config import DType
from omnirun.engine.openai.engine import NAME, OpenAIEngine
from omnirun.plugins import BackendRequest, BackendSpec, Capability


def problem(request: BackendRequest) -> str | None:
    """Why the backend cannot serve this request: no `model.endpoint`, or a local loading choice that the server
    makes instead."""
    if request.model is not None and not request.model.endpoint:
        return "it needs model.endpoint=http(s)://host:port/v1 (the server) and model.name=<the served model>"
    hardware = request.hardware
    local = [
        name
        for name, value in (
            ("dtype", hardware.dtype not in (DType.auto, DType.checkpoint)),
            ("quantization", hardware.quantization),
            ("device_map", hardware.device_map is not None),
        )
        if value
    ]
    if local:
        return f"hardware.{'/'.join(local)} set explicitly, which the server decides (unset it)"
    return None


BACKEND = BackendSpec(
    name=NAME,
    factory=OpenAIEngine,
    capabilities=frozenset({Capability.generate, Capability.analyze}),
    summary="an OpenAI-compatible server at model.endpoint (vLLM, SGLang, TGI, llama.cpp's server, OpenAI)",
    problem=problem,
    task_options=("concurrency", "retries", "timeout_s"),
    local_model=False,
    honours=frozenset(),  # the server loads the model: no local loading option applies
)
