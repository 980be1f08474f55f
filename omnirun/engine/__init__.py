"""Inference engines: `base.Engine` is the interface, `build.build()` the only config → backend map, and
`TransformersEngine` the seed's Python API; `capabilities` says which tasks a model's config can serve.

Backends: `hf` (Hugging Face Transformers) and `llamacpp` (GGUF files through llama.cpp, optional:
`pip install 'omnirun[llama-cpp]'`). Import `build` from `omnirun.engine.build`."""

from omnirun.engine.api import TransformersEngine
from omnirun.engine.base import (
    Completion,
    Engine,
    EngineCore,
    MemoryReport,
    ParameterCount,
    SavedModel,
    StreamHandle,
)

__all__ = [
    "Completion",
    "Engine",
    "EngineCore",
    "MemoryReport",
    "ParameterCount",
    "SavedModel",
    "StreamHandle",
    "TransformersEngine",
]
