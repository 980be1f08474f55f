"""`HfEngine`: load a Hugging Face Transformers model and run single, batched, streamed and chat generation on
it (or save / export it). The only module that knows Transformers' loading arguments.

Loading goes config first: the model's config (with `model.config_overrides`), then the head the task needs
(`capabilities`: a model that cannot serve the task is refused here, before the tokenizer and the weights), then
the tokenizer, the hardware plan, and the weights (pretrained, or random from the config with `model.init=random`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from omnirun import hardware
from omnirun.choices import Backend
from omnirun.config import (
    Device,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelInit,
    ModelType,
    Quantization,
    TaskConfig,
    TaskName,
)
from omnirun.engine import capabilities
from omnirun.engine import source as models
from omnirun.engine.base import NOT_LOADED, Answer, Completion, ConvenienceAPI, MemoryReport, ParameterCount, SavedModel
from omnirun.engine.hf import prepare
from omnirun.engine.hf.bounds import check_fits
from omnirun.engine.hf.generate import generate_encoded
from omnirun.engine.hf.loading import (
    add_int4_decode,
    check_placement,
    checkpoint_names,
    dense_copy,
    estimate_size,
    logits_of,
    memory_report,
    position_limit,
    prepare_tokenizer,
    quiet_int8_cast_notes,
    refuse_oversized,
    release_memory,
    weight_kwargs,
)
from omnirun.engine.hf.stream import TokenStream
from omnirun.errors import ConfigError, ModelLoadError, first_line
from omnirun.hardware import HardwareInfo, HardwarePlan, ModelSize, Placement

log = logging.getLogger(__name__)


class HfEngine(ConvenienceAPI):
    """Inference on a Hugging Face Transformers model, from typed configs (`engine.build` makes one).

    `placement` is the device and backend chosen once by `engine.build`; without it the engine places
    itself on the request's device when it loads. `auto_config=False` (the seed API's manual mode) plans
    with the given values as they are (fp32 on CPU, CUDA if present, no int4 decoding copies). The engine serves
    text generation unless `check_task` names another task (e.g. `export`, which takes any head).
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
        self.task = TaskName.generate
        self.head: capabilities.Head | None = None
        """The AutoModel head loaded for the task (set by `check_task` or `load_tokenizer`)."""
        self.model: Any = None
        self.tokenizer: Any = None
        self.preprocessor: Any = None
        """The tokenizer (text heads) or processor (image, audio heads) that `save` writes with the model."""
        self.plan: HardwarePlan | None = None
        self.source: models.ModelSource | None = None
        self.load_seconds: float | None = None
        self._config: Any = None  # the Transformers model config (overrides applied), read once
        self._prepared = False
        self._path = ""
        self._common: dict[str, Any] = {}
        self._analyzer: Any = None

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

    def check_task(self, task: TaskName) -> None:
        """Refuse a task this model cannot serve (ConfigError naming the task, the model's architectures and
        what it can serve), from its config alone; remember the head that serves it for `load_model()`."""
        self.task, self.head, self._prepared = TaskName(task), None, False
        explicit = None if self.model_config.model_type is None else ModelType(self.model_config.model_type)
        config, weights = self._read_config(), None  # a config without `architectures`: its weights name the head
        if not capabilities.architectures(config) and self.model_config.init == ModelInit.pretrained:
            weights = checkpoint_names(self._path)
        self.head = capabilities.check_task(self.task, config, self.model_name, explicit, weights)

    def _read_config(self) -> Any:
        """Resolve the model (converting a GGUF file on first use) and read its config, overrides applied."""
        if self._config is not None:
            return self._config
        import transformers

        m = self.model_config
        source = models.resolve(m.name, m.gguf_file)
        if source.kind == "config" and m.init != ModelInit.random:
            raise ConfigError(
                f"model.name={m.name!r} is a config file: an architecture without weights; set model.init=random "
                "to build it with random weights, or point model.name at a model folder"
            )
        path, gguf_file = source.path, source.gguf_file
        if source.is_gguf:  # one loading path for everything: GGUF becomes a cached dense folder first
            path, gguf_file = str(dense_copy(source)), None
        common: dict[str, Any] = {"revision": m.revision, "trust_remote_code": m.trust_remote_code}
        common["cache_dir"] = m.cache_dir
        if gguf_file:
            common["gguf_file"] = gguf_file
        try:
            config = transformers.AutoConfig.from_pretrained(path, **common)
        except Exception as exc:  # hub unreachable, missing files, unsupported architecture, ...
            raise models.describe_load_failure(source, exc) from exc
        prepare.apply_overrides(config, m)
        self.source, self._path, self._common, self._config = source, path, common, config
        return config

    def load_tokenizer(self) -> Any:
        """Read the config, check the task against it, and load the tokenizer (or processor), without the
        weights: enough to check a chat template before paying for the weights."""
        if self._prepared:
            return self.tokenizer if self.tokenizer is not None else self.preprocessor
        config = self._read_config()
        if self.head is None:
            self.check_task(self.task)
        assert self.head is not None and self.source is not None
        head = self.head
        pre = prepare.load_preprocessor(head, self.source, self._path, self._common, self.model_config)
        if head.family == capabilities.GENERATE:
            self.model_type = ModelType.seq2seq if head.name == "seq2seq" else ModelType.causal_lm
        if head.inputs == "text":
            prepare_tokenizer(pre, self.model_type)
            self.tokenizer = pre
        self.preprocessor, self._config, self._prepared = pre, config, True
        return self.tokenizer if self.tokenizer is not None else pre

    def load_model(self) -> Self:
        """Resolve the model, plan the hardware, and load tokenizer and weights. A no-op when loaded."""
        if self.is_loaded:
            return self
        import torch

        start = time.perf_counter()
        self.load_tokenizer()
        assert self.source is not None and self.head is not None
        model_cls = capabilities.model_class(self.head)
        size = estimate_size(model_cls, self._config, prepare.checkpoint_dtype(self._config, self._path))
        model, plan = self._load_weights(model_cls, self._plan(size, self.source), size)
        model.eval()
        if plan.cpu_int4_decode:
            plan = add_int4_decode(model, plan)
        if plan.num_threads:
            torch.set_num_threads(plan.num_threads)
        self.model, self.plan = model, plan
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s in %.2fs on %s (%s)", self.model_name, self.load_seconds, plan.device, plan.dtype)
        return self

    def _load_weights(self, model_cls: Any, plan: HardwarePlan, size: hardware.ModelSize) -> tuple[Any, HardwarePlan]:
        """The weights as planned; a quantized load that fails is retried unquantized (the reason in the plan)
        unless `hardware.quantization_strict`."""
        random = self.model_config.init == ModelInit.random
        if random:
            why = "model.init=random builds the architecture from its config; no weights are read"
            plan = replace(plan, reasons={**plan.reasons, "weights": f"random: {why}"})
            if plan.quantization:
                plan = self._unquantized(
                    plan, size, "bitsandbytes quantizes weights as they load, and random init loads none"
                )
        try:
            return self._weights(model_cls, plan, size), plan
        except (ConfigError, ModelLoadError):
            raise
        except Exception as exc:
            assert self.source is not None
            if plan.quantization is None or self.hardware_config.quantization_strict:
                raise models.describe_load_failure(self.source, exc) from exc
            release_memory()
            plan = self._unquantized(plan, size, f"the {plan.quantization} load failed ({first_line(str(exc))[:200]})")
        try:
            return self._weights(model_cls, plan, size), plan
        except (ConfigError, ModelLoadError):
            raise
        except Exception as exc:
            raise models.describe_load_failure(self.source, exc) from exc

    def _weights(self, model_cls: Any, plan: HardwarePlan, size: ModelSize) -> Any:
        import torch

        m = self.model_config
        refuse_oversized(m, size, plan)  # before anything is allocated: the parameter count is known
        config = copy.deepcopy(self._config)  # loading may add a quantization_config to the config it is given
        if m.init == ModelInit.random:
            extra = {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}
            model = model_cls.from_config(
                config, dtype=getattr(torch, plan.dtype), trust_remote_code=m.trust_remote_code, **extra
            )
            return model.to(str(plan.device))
        kwargs = weight_kwargs(plan, m, torch)
        if m.num_labels is not None:
            kwargs["ignore_mismatched_sizes"] = True  # a new head of num_labels outputs (random until trained)
        if plan.quantization == Quantization.int8:
            quiet_int8_cast_notes()
        model = model_cls.from_pretrained(self._path, config=config, **self._common, **kwargs)
        if plan.device_map is None and plan.quantization is None:
            model.to(str(plan.device))
        if plan.device_map is not None:
            try:
                check_placement(model, plan)
            except ConfigError:
                del model
                release_memory()
                raise
        return model

    def _unquantized(self, plan: HardwarePlan, size: hardware.ModelSize, why: str) -> HardwarePlan:
        """The plan without quantization, its reason saying why (a warning, too); ConfigError when strict."""
        requested = plan.quantization or self.hardware_config.quantization
        if self.hardware_config.quantization_strict:
            raise ConfigError(f"hardware.quantization={requested} cannot be honoured: {why}")
        assert self.source is not None
        new = self._plan(size, self.source, replace(self.hardware_config, quantization=None))
        reasons = {**plan.reasons, **new.reasons, "quantization": hardware.quantization_fallback(requested, why)}
        return replace(new, reasons=reasons)

    def _plan(
        self, size: hardware.ModelSize, source: models.ModelSource, request: HardwareConfig | None = None
    ) -> hardware.HardwarePlan:
        """The hardware plan on this engine's placement (made here, once, when none was given)."""
        info = self.info or hardware.detect()
        if not info.int4_kernels:  # detect() leaves it unknown when it did not need torch
            info = replace(info, int4_kernels=hardware.torch_int4_kernels())
        request = request or self.hardware_config
        if self.head is not None and self.head.family != capabilities.GENERATE:  # int4 copies serve decoding only
            request = replace(request, optimize=False)
        placement = self.placement or hardware.place(
            replace(request, backend=Backend.transformers), info, gguf=source.is_gguf
        )
        return hardware.plan(request, size, info, placement=placement, auto=self.auto_config)

    def unload_model(self) -> None:
        """Drop the weights and tokenizer and give their memory back (RSS and CUDA cache)."""
        if self.model is None and self.tokenizer is None and self.preprocessor is None:
            return
        self.model = self.tokenizer = self.preprocessor = self._config = self._analyzer = None
        self._prepared = False
        release_memory()

    # ------------------------------------------------------------------------------------------ saving, size
    def parameters(self) -> ParameterCount | None:
        """Total and trainable parameters (`num_parameters()`); None before `load_model()`."""
        if self.model is None:
            return None
        return ParameterCount(self.model.num_parameters(), self.model.num_parameters(only_trainable=True))

    def save(self, path: str | Path) -> SavedModel:
        """The loaded model as safetensors plus its tokenizer / processor, in the folder `path`."""
        from omnirun.engine.hf import export

        model, _ = self._model_and_head()
        return export.save(model, self.preprocessor, path)

    def export_onnx(self, path: str | Path) -> SavedModel:
        """The loaded model as `model.onnx` (torch's exporter) with its config and tokenizer, in `path`."""
        from omnirun.engine.hf import export

        model, head = self._model_and_head()
        return export.export_onnx(model, self.preprocessor, head, path)

    def push_to_hub(self, repo: str, folder: str | Path | None = None, *, private: bool = False) -> str:
        """Upload `folder` (None: the model as `save` writes it) to the hub repo `repo`; returns the commit URL."""
        from omnirun.engine.hf import export

        return export.push_to_hub(repo, folder, self.save, private=private)

    def _model_and_head(self) -> tuple[Any, capabilities.Head]:
        if self.model is None or self.head is None:
            raise RuntimeError(NOT_LOADED)
        return self.model, self.head

    def _loaded(self) -> tuple[Any, Any, ModelType]:
        """Model, tokenizer and model type; RuntimeError when the weights are not loaded."""
        if self.model is None:
            raise RuntimeError(NOT_LOADED)
        if self.model_type is None:
            head = self.head.description if self.head else "non-generation"
            raise ConfigError(f"model {self.model_name!r} has a {head} head; it does not generate text")
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
        """The text's tokens. A text that a prefix already proves longer than the model's context raises
        InputError instead of being tokenized whole (it cannot be a prompt; tokenizing 5 MB took 2.4 GB)."""
        model, tokenizer, _ = self._loaded()
        check_fits(tokenizer, "the prompt", text, position_limit(model))
        return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    @property
    def max_context(self) -> int | None:
        """The model's context length, when its config says."""
        return position_limit(self._loaded()[0])

    def memory(self) -> MemoryReport:
        return memory_report(self.model)

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

    def analyze(
        self, task: TaskName, items: list[dict[str, Any]], options: TaskConfig, params: GenerationConfig | None = None,
        seed: int | list[int] | None = None,
    ) -> list[Answer]:  # fmt: skip
        """A non-generation task over a batch of items (see `engine.hf.analyze`), one Answer per item; `seed`
        one int for the batch or one per item (caption's sampling)."""
        from omnirun.engine.hf.analyze import Analyzer

        model, head = self._model_and_head()
        base = head.name == capabilities.BASE.name
        self._analyzer = self._analyzer or Analyzer(model, self.preprocessor, self._path, self._common, base)
        return self._analyzer.run(TaskName(task), items, options, params or self.default_generation, seed)

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids` (one forward pass; causal LMs only)."""
        model, _, model_type = self._loaded()
        if model_type != ModelType.causal_lm:
            raise ValueError("argmax_next needs a causal LM")
        return list(logits_of(model, ids)[0].argmax(dim=-1).tolist())

    def next_logits(self, ids: list[int]) -> Any:
        """The fp32 logits of the token after `ids` (a 1-D tensor; causal LMs only)."""
        return logits_of(self._loaded()[0], ids)[0, -1].float().cpu()
