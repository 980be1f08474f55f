"""The llama.cpp backend: GGUF files on the CPU through llama-cpp-python (an optional dependency).

Importing this package does not import llama_cpp; loading a model does."""

from omnirun.engine.llamacpp.decode import Sampler
from omnirun.engine.llamacpp.engine import LlamaCppEngine
from omnirun.engine.llamacpp.native import GGUFTokenizer

__all__ = ["GGUFTokenizer", "LlamaCppEngine", "Sampler"]
