"""`OrtEngine`: text generation on the CPU through ONNX Runtime (onnxruntime-genai, an optional dependency).

The model (a Hugging Face folder, hub id, or GGUF file through its dense copy) is exported once by
onnxruntime-genai's model builder into omnirun's cache (`export.py`): fp32, or int4 / int8 MatMulNBits weights
(`hardware.quantization`). Later runs load the cached export. The Hugging Face tokenizer does the tokenizing and
the chat template, so prompts are the same token ids Transformers sees; onnxruntime-genai runs the model and its
search (`decode.py`). Only the generation tasks are served.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from omnirun import hardware
from omnirun.config import (
    Backend,
    Device,
    DType,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelType,
    Quantization,
    TaskName,
)
from omnirun.engine import capabilities
from omnirun.engine import source as models
from omnirun.engine.base import (
    NOT_LOADED,
    Completion,
    ConvenienceAPI,
    MemoryReport,
    ParameterCount,
)
from omnirun.engine.onnxruntime import decode, export
from omnirun.engine.onnxruntime.tokenizer import FastTokenizer
from omnirun.errors import ConfigError
from omnirun.hardware import HardwareInfo, HardwarePlan, Placement

log = logging.getLogger(__name__)

PRECISION = {None: "fp32", Quantization.int8: "int8", Quantization.int4: "int4", Quantization.auto: "fp32"}
"""The export's weights per `hardware.quantization`. `auto` keeps fp32: int8 and int4 weights missed the greedy
agreement bar (0.97 teacher-forced) on the noisy dense SmolLM2 (benchmarks/results/cpu_paths.md)."""


class OrtEngine(ConvenienceAPI):
    """Inference through onnxruntime-genai on the CPU, from typed configs (`engine.build` makes one)."""

    model_type = ModelType.causal_lm

    def __init__(
        self,
        model: ModelConfig,
        hardware: HardwareConfig,
        *,
        placement: Placement | None = None,
        info: HardwareInfo | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.default_generation = generation or GenerationConfig()
        self.default_generation.validate(prefix="")
        self.model_config, self.hardware_config = model, hardware
        self.placement, self.info = placement, info
        self.batch_size = batch_size
        self.plan: HardwarePlan | None = None
        self.source: models.ModelSource | None = None
        self.load_seconds: float | None = None
        self.export_path: Path | None = None
        self.tokenizer: Any = None
        self._model: Any = None
        self._genai: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------- loading
    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> Device:
        return Device.cpu

    @property
    def precision(self) -> str:
        """`fp32`, `int8` or `int4`: the export's weights, from `hardware.quantization`."""
        return PRECISION[self.hardware_config.quantization]

    def _folder(self) -> Path:
        """The local Hugging Face folder behind the model (a GGUF file's dense copy)."""
        export.genai_version()  # a one-line ConfigError before any conversion when onnxruntime-genai is missing
        source = models.resolve(self.model_config.name, self.model_config.gguf_file)
        if source.kind == "config":
            raise ConfigError(
                f"model.name={self.model_name!r} is a config file without weights; hardware.backend=onnxruntime "
                "exports real weights only, use hardware.backend=transformers"
            )
        self.source = source
        return export.model_folder(source)

    def load_tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer files, read without Transformers (from the cached export when there is
        one), without the weights."""
        if self.tokenizer is None:
            self.tokenizer = FastTokenizer(self.export_path or self._folder())
        return self.tokenizer

    def load_model(self) -> Self:
        """Export the model on first use, then load the cached export. A no-op when loaded."""
        if self.is_loaded:
            return self
        import onnxruntime_genai as og

        start = time.perf_counter()
        folder = self._folder()
        assert self.source is not None
        path = export.export(self.source, self.precision, model_name=self.model_name)
        self.export_path = path
        self._genai = json.loads((path / "genai_config.json").read_text())["model"]
        self.plan = self._plan()
        config = og.Config(str(path))
        # Always explicit: left unset, onnxruntime-genai's session ran a 32-prompt batch 1.6-1.9x slower here.
        assert self.info is not None  # read by _plan
        threads = self.plan.num_threads or self.info.cpu_cores
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self._model = og.Model(config)
        if self.tokenizer is None:
            self.load_tokenizer()
        self.load_seconds = time.perf_counter() - start
        log.info(
            "loaded %s (%s, from %s) with onnxruntime-genai in %.2fs",
            self.model_name,
            self.precision,
            folder,
            self.load_seconds,
        )
        return self

    def _plan(self) -> HardwarePlan:
        """The hardware plan on this engine's placement: the CPU, fp32 activations, the export's weights."""
        info = self.info = self.info or hardware.detect()  # read once; load_model takes the core count from it
        request = replace(self.hardware_config, quantization=None, backend=Backend.onnxruntime)
        placement = self.placement or hardware.place(replace(request, device=Device.cpu), info, gguf=False)
        decoder = self._genai["decoder"]
        size = hardware.ModelSize(
            params=self.parameter_count,
            num_layers=int(decoder["num_hidden_layers"]),
            kv_dim=int(decoder["num_key_value_heads"]) * int(decoder["head_size"]),
        )
        plan = hardware.plan(request, size, info, placement=placement)
        quantization = None if self.precision == "fp32" else Quantization(self.precision)
        reasons = {
            **plan.reasons,
            "device": "cpu: the onnxruntime backend runs on the CPU",
            "dtype": "float32 activations (onnxruntime's CPU kernels)",
            "quantization": (
                f"{self.precision}: MatMulNBits weights with fp32 block scales (hardware.quantization="
                f"{self.hardware_config.quantization}), exported by onnxruntime-genai's model builder"
                if quantization
                else "none: fp32 weights (hardware.quantization=null)"
            ),
        }
        return replace(plan, dtype=DType.float32, quantization=quantization, reasons=reasons)

    @property
    def parameter_count(self) -> int:
        if self.export_path is None:
            return 0
        return int(json.loads((self.export_path / models_meta()).read_text()).get("params", 0))

    def unload_model(self) -> None:
        """Drop the model and the tokenizer."""
        self._model = self.tokenizer = None

    def _loaded(self) -> tuple[Any, Any]:
        if self._model is None or self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return self._model, self.tokenizer

    def check_task(self, task: TaskName) -> None:
        """onnxruntime-genai runs language models: the generation tasks, and nothing else."""
        capabilities.require_generation(task, "hardware.backend=onnxruntime runs text generation only")

    def parameters(self) -> ParameterCount | None:
        """The source model's parameter count (from its safetensors headers); nothing is trainable here."""
        return None if self._model is None else ParameterCount(self.parameter_count, None)

    # ------------------------------------------------------------------------------------------------ queries
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (needs `load_tokenizer()` or `load_model()` first)."""
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the prompt text the model expects, ending with the assistant's turn."""
        _, tokenizer = self._loaded()
        if not self.has_chat_template():
            raise ValueError(f"model {self.model_name!r} has no chat template; use infer() with a plain prompt")
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        _, tokenizer = self._loaded()
        return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    @property
    def max_context(self) -> int | None:
        """The export's context length."""
        self._loaded()
        return int(self._genai.get("context_length", 0)) or None

    def memory(self) -> MemoryReport:
        import psutil

        footprint = None
        if self._model is not None and self.export_path is not None:
            footprint = sum(f.stat().st_size for f in self.export_path.glob("model.onnx*")) / hardware.MB
        rss = psutil.Process().memory_info().rss / hardware.MB
        return MemoryReport(model_footprint_mb=footprint, rss_mb=rss, cuda_allocated_mb=None, cuda_reserved_mb=None)

    # ------------------------------------------------------------------------------------------- generation
    def _search(self) -> dict[str, Any]:
        """What every decoding call needs besides the prompts: end-of-sequence ids, padding id, vocabulary size."""
        eos = self._genai.get("eos_token_id", [])
        eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos])}
        return {"eos": eos_ids, "pad": int(self._genai["pad_token_id"]), "vocab": int(self._genai["vocab_size"])}

    def _detokenize(self, tokens: list[int]) -> str:
        _, tokenizer = self._loaded()
        return str(tokenizer.decode(tokens, skip_special_tokens=True))

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        """Complete `texts` together (one batch through onnxruntime-genai's search)."""
        _, tokenizer = self._loaded()
        ids = [list(tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"]) for t in texts]
        return self.generate_ids(ids, params, seed=seed)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        """Like `generate`, from token ids."""
        model, _ = self._loaded()
        return decode.run(model, ids, params, seed=seed, detokenize=self._detokenize, **self._search())

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> decode.OrtStream:
        """A stream of text pieces, decoded on this thread as they are produced."""
        model, tokenizer = self._loaded()
        prompt = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        return decode.OrtStream(model, prompt, params, seed=seed, detokenize=self._detokenize, **self._search())

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids`."""
        model, _ = self._loaded()
        return decode.argmax_next(model, ids)


def models_meta() -> str:
    """The name of the metadata file written beside a cached export."""
    return export.META
