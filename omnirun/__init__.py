"""omnirun: a config-driven runner for Transformers inference.

The engine document's Python API: `TransformersEngine`, `LlamaCppEngine`, `OptimumEngine` (ONNX Runtime),
`DiffusersEngine`, and `InferenceEngine`, the contract every engine meets. Imported on first use, so
`import omnirun` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from omnirun.engine.api import TransformersEngine
    from omnirun.engine.base import Engine as InferenceEngine
    from omnirun.engine.facades import DiffusersEngine, LlamaCppEngine, OptimumEngine

_API = {
    "TransformersEngine": ("omnirun.engine.api", "TransformersEngine"),
    "InferenceEngine": ("omnirun.engine.base", "Engine"),
    "LlamaCppEngine": ("omnirun.engine.facades", "LlamaCppEngine"),
    "OptimumEngine": ("omnirun.engine.facades", "OptimumEngine"),
    "DiffusersEngine": ("omnirun.engine.facades", "DiffusersEngine"),
}

__all__ = ["DiffusersEngine", "InferenceEngine", "LlamaCppEngine", "OptimumEngine", "TransformersEngine"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'omnirun' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
