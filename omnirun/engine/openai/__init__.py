"""The `openai` backend: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's server, OpenAI) as the
engine, at `model.endpoint`, for the model it serves as `model.name`; its spec is `omnirun.engine.openai.spec`."""

from omnirun.engine.openai.engine import OpenAIEngine

__all__ = ["OpenAIEngine"]
