"""`HfEngine`: load any causal-LM or seq2seq model with Hugging Face Transformers and run single, batched,
streamed and chat generation on it. The only module that knows Transformers' loading arguments."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Self

from omnirun import hardware
from omnirun.config import Backend, Device, GenerationConfig, HardwareConfig, ModelConfig, ModelType, Quantization
from omnirun.engine import source as models
from omnirun.engine.base import NOT_LOADED, Completion, ConvenienceAPI, MemoryReport
from omnirun.engine.hf.generate import generate_encoded
from omnirun.engine.hf.loading import (
    add_int4_decode,
    dense_copy,
    estimate_size,
    model_class,
    prepare_tokenizer,
    quiet_int8_cast_notes,
    release_memory,
    weight_kwargs,
)
from omnirun.engine.hf.stream import TokenStream
from omnirun.errors import ConfigError, ModelLoadError
from omnirun.hardware import HardwareInfo, HardwarePlan, Placement

log = logging.getLogger(__name__)


class HfEngine(ConvenienceAPI):
    """Inference on a Hugging Face Transformers model, from typed configs (`engine.build` makes one).

    `placement` is the device and backend chosen once by `engine.build`; without it the engine places
    itself on the request's device when it loads. `auto_config=False` (the seed API's manual mode) plans
    with the given values as they are (fp32 on CPU, CUDA if present, no int4 decoding copies).
    """

    def __init__(
        self,
        model: ModelConfig,
        hardware: HardwareConfig,
        *,
        placement: Placement | None = None,
        info: HardwareInfo | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
        auto_config: bool = True,
    ) -> None:
        self.default_generation = generation or GenerationConfig()
        self.default_generation.validate(prefix="")
        self.model_config, self.hardware_config = model, hardware
        self.placement, self.info = placement, info
        self.batch_size = batch_size
        self.auto_config = auto_config
        self.model_type = None if model.model_type is None else ModelType(model.model_type)
        self.model: Any = None
        self.tokenizer: Any = None
        self.plan: HardwarePlan | None = None
        self.source: models.ModelSource | None = None
        self.load_seconds: float | None = None
        self._config: Any = None  # the Transformers model config, read by load_tokenizer()
        self._path = ""
        self._common: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------- loading
    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def is_loaded(self) -> bool:
        return self.model is not None

    @property
    def device(self) -> Device:
        return self.plan.device if self.plan else Device.cpu

    def load_tokenizer(self) -> Any:
        """Resolve the model (converting a GGUF file on first use) and load its config and tokenizer, without
        the weights: enough to check a chat template before paying for the weights."""
        if self.tokenizer is not None:
            return self.tokenizer
        import transformers

        m = self.model_config
        source = models.resolve(m.name, m.gguf_file)
        path, gguf_file = source.path, source.gguf_file
        if source.is_gguf:  # one loading path for everything: GGUF becomes a cached dense folder first
            path, gguf_file = str(dense_copy(source)), None
        common: dict[str, Any] = {"revision": m.revision, "trust_remote_code": m.trust_remote_code}
        common["cache_dir"] = m.cache_dir
        if gguf_file:
            common["gguf_file"] = gguf_file
        try:
            self._config = transformers.AutoConfig.from_pretrained(path, **common)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
        except Exception as exc:  # hub unreachable, missing files, unsupported architecture, ...
            raise models.describe_load_failure(source, exc) from exc
        detected = ModelType.seq2seq if self._config.is_encoder_decoder else ModelType.causal_lm
        self.model_type = self.model_type or detected
        prepare_tokenizer(tokenizer, self.model_type)
        self.source, self._path, self._common, self.tokenizer = source, path, common, tokenizer
        return tokenizer

    def load_model(self) -> Self:
        """Resolve the model, plan the hardware, and load tokenizer and weights. A no-op when loaded."""
        if self.is_loaded:
            return self
        import torch

        start = time.perf_counter()
        self.load_tokenizer()
        assert self.source is not None and self.model_type is not None
        model_cls = model_class(self.model_type)
        plan = self._plan(estimate_size(model_cls, self._config), self.source)
        if plan.quantization == Quantization.int8:
            quiet_int8_cast_notes()
        kwargs = weight_kwargs(plan, self.model_config, torch)
        try:
            model = model_cls.from_pretrained(self._path, **self._common, **kwargs)
        except (ConfigError, ModelLoadError):
            raise
        except Exception as exc:
            raise models.describe_load_failure(self.source, exc) from exc
        if plan.device_map is None and plan.quantization is None:
            model.to(str(plan.device))
        model.eval()
        if plan.cpu_int4_decode:
            plan = add_int4_decode(model, plan)
        if plan.num_threads:
            torch.set_num_threads(plan.num_threads)
        self.model, self.plan = model, plan
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s in %.2fs on %s (%s)", self.model_name, self.load_seconds, plan.device, plan.dtype)
        return self

    def _plan(self, size: hardware.ModelSize, source: models.ModelSource) -> hardware.HardwarePlan:
        """The hardware plan on this engine's placement (made here, once, when none was given)."""
        info = self.info or hardware.detect()
        if not info.int4_kernels:  # detect() leaves it unknown when it did not need torch
            info = replace(info, int4_kernels=hardware.torch_int4_kernels())
        request = self.hardware_config
        placement = self.placement or hardware.place(
            replace(request, backend=Backend.transformers), info, gguf=source.is_gguf
        )
        return hardware.plan(request, size, info, placement=placement, auto=self.auto_config)

    def unload_model(self) -> None:
        """Drop the weights and tokenizer and give their memory back (RSS and CUDA cache)."""
        if self.model is None and self.tokenizer is None:
            return
        self.model = self.tokenizer = self._config = None
        release_memory()

    def _loaded(self) -> tuple[Any, Any, ModelType]:
        """Model, tokenizer and model type; RuntimeError when the weights are not loaded."""
        if self.model is None or self.model_type is None:
            raise RuntimeError(NOT_LOADED)
        return self.model, self.tokenizer, self.model_type

    # ------------------------------------------------------------------------------------------------ queries
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (needs `load_tokenizer()` or `load_model()` first)."""
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the prompt text the model expects, ending with the assistant's turn."""
        _, tokenizer, _ = self._loaded()
        if not self.has_chat_template():
            raise ValueError(
                f"model {self.model_name!r} has no chat template; use infer() with a plain prompt, "
                "or a chat model such as smollm2"
            )
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        _, tokenizer, _ = self._loaded()
        return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    @property
    def max_context(self) -> int | None:
        """The model's context length, when its config says."""
        model, _, _ = self._loaded()
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(model.config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def memory(self) -> MemoryReport:
        import psutil
        import torch

        footprint = self.model.get_memory_footprint() / hardware.MB if self.model is not None else None
        cuda = torch.cuda.is_available()
        return MemoryReport(
            model_footprint_mb=footprint,
            rss_mb=psutil.Process().memory_info().rss / hardware.MB,
            cuda_allocated_mb=torch.cuda.memory_allocated() / hardware.MB if cuda else None,
            cuda_reserved_mb=torch.cuda.memory_reserved() / hardware.MB if cuda else None,
        )

    # ------------------------------------------------------------------------------------------- generation
    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        """One `model.generate` call over `texts` (one batch, left-padded for decoder-only models)."""
        model, tokenizer, model_type = self._loaded()
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        return generate_encoded(model, tokenizer, model_type, enc, params, seed)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        """Like `generate`, from token ids (e.g. synthetic prompts of an exact length)."""
        model, tokenizer, model_type = self._loaded()
        enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        return generate_encoded(model, tokenizer, model_type, enc, params, seed)

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> TokenStream:
        """A stream of text pieces from a decode loop on this thread; see `TokenStream`."""
        model, tokenizer, model_type = self._loaded()
        if params.num_beams > 1:
            raise ValueError(f"streaming cannot use beam search (num_beams={params.num_beams}); set num_beams=1")
        return TokenStream(model, tokenizer, model_type, text, params, add_special_tokens=add_special_tokens, seed=seed)

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids` (one forward pass; causal LMs only)."""
        import torch

        model, _, model_type = self._loaded()
        if model_type != ModelType.causal_lm:
            raise ValueError("argmax_next needs a causal LM")
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
        return list(logits[0].argmax(dim=-1).tolist())

    def next_logits(self, ids: list[int]) -> Any:
        """The fp32 logits of the token after `ids` (a 1-D tensor; causal LMs only)."""
        import torch

        model, _, _ = self._loaded()
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float().cpu()
