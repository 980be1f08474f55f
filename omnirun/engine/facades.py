"""The engine document's Python names for the other backends: `LlamaCppEngine`, `OptimumEngine` (the ONNX
Runtime backend) and `DiffusersEngine`, thin facades with the document's keywords (`auto_config`, `device`,
`dtype`, `quantization`, `trust_remote_code`, `model_type`) and methods (`load_model`, `infer`, `stream`,
`chat`, `unload_model`, `with`). `TransformersEngine` (`engine.api`) is the Transformers one, and
`InferenceEngine` the contract they all meet (`engine.base.Engine`).

Each builds its backend's engine through `engine.build`, as the CLI does, with `hardware.backend` fixed, so a
request that backend cannot serve is the same one-line ConfigError.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from omnirun.checks import parse_choice
from omnirun.config import Device, DType, GenerationConfig, HardwareConfig, ModelConfig, Quantization
from omnirun.engine import source
from omnirun.engine.base import ConvenienceAPI, Engine
from omnirun.engine.build import build


class BackendFacade(ConvenienceAPI):
    """A backend's engine behind the document's constructor; every other attribute is the engine's own."""

    backend: ClassVar[str]

    def __init__(
        self,
        model_id: str = source.BUNDLED,
        auto_config: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        quantization: str | None = None,
        trust_remote_code: bool = False,
        model_type: str | None = None,
        *,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        model = ModelConfig(name=model_id, model_type=model_type, trust_remote_code=trust_remote_code)
        hardware = HardwareConfig(
            backend=self.backend,
            optimize=auto_config,
            device=parse_choice("device", Device, device),
            dtype=parse_choice("dtype", DType, dtype),
            quantization=None if quantization is None else parse_choice("quantization", Quantization, quantization),
            num_threads=num_threads,
        )
        model.validate()
        hardware.validate()
        self.engine: Engine = build(model, hardware, generation=generation, batch_size=batch_size)

    def __getattr__(self, name: str) -> Any:
        if name == "engine":  # not set yet: the constructor failed
            raise AttributeError(name)
        return getattr(self.engine, name)

    def load_model(self) -> Self:
        self.engine.load_model()
        return self

    def unload_model(self) -> None:
        self.engine.unload_model()


class LlamaCppEngine(BackendFacade):
    """A GGUF model through llama.cpp on the CPU (`pip install 'omnirun[llama-cpp]'`); the default model is the
    bundled SmolLM2 GGUF."""

    backend = "llama.cpp"


class OptimumEngine(BackendFacade):
    """A Hugging Face causal LM exported once to ONNX and run by ONNX Runtime on the CPU
    (`pip install 'omnirun[onnxruntime]'`); `quantization="int4"` / `"int8"` exports quantized weights."""

    backend = "onnxruntime"


class DiffusersEngine(BackendFacade):
    """A diffusers text-to-image pipeline (a folder with model_index.json): `run_task("image", [{"prompt": ...}])`
    is `task=image` in Python."""

    backend = "diffusers"
