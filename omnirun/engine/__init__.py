"""Inference engines. `TransformersEngine` is the only module that knows Transformers' loading arguments."""

from omnirun.engine.base import Completion, Engine, MemoryReport
from omnirun.engine.transformers import TransformersEngine

__all__ = ["Completion", "Engine", "MemoryReport", "TransformersEngine"]
