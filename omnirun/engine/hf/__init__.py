"""The Transformers backend: any causal-LM or seq2seq model through Hugging Face Transformers."""

from omnirun.engine.hf.engine import HfEngine

__all__ = ["HfEngine"]
