"""The diffusers backend: text-to-image pipelines (Stable Diffusion and the others `DiffusionPipeline` loads)."""

from omnirun.engine.diffusers.engine import DiffusersEngine

__all__ = ["DiffusersEngine"]
