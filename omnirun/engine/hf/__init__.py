"""The Transformers backend: causal-LM and seq2seq generation through Hugging Face Transformers, and saving or
exporting any head `omnirun.engine.capabilities` knows."""

from omnirun.engine.hf.engine import HfEngine

__all__ = ["HfEngine"]
