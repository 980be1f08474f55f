"""The onnxruntime backend: Hugging Face language models exported once to ONNX (fp32, or int4 / int8 MatMulNBits
weights) and run on the CPU by onnxruntime-genai (an optional dependency).

Importing this package does not import onnxruntime_genai; loading a model does."""

from omnirun.engine.onnxruntime.engine import OrtEngine

__all__ = ["OrtEngine"]
