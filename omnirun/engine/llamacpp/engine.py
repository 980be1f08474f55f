"""`LlamaCppEngine`: GGUF models on the CPU through llama.cpp (`llama-cpp-python`, an optional dependency).

The same `Engine` API as the Transformers backend. A batch of prompts is decoded together: one
`llama_decode` per step serves every unfinished sequence (each its own `seq_id` and KV cells), and a sequence
that finishes leaves the batch. Sampling (greedy, temperature, top-k, top-p, repetition penalty,
min_new_tokens) follows Transformers' definitions, in numpy; beam search and no_repeat_ngram_size are
Transformers-only. No torch or transformers import on this path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from omnirun import hardware
from omnirun.config import (
    Backend,
    Device,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelType,
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
from omnirun.engine.llamacpp.context import MAX_BATCH_TOKENS, LlamaContextHandle
from omnirun.engine.llamacpp.decode import Decoder, LlamaStream
from omnirun.engine.llamacpp.native import GGUFTokenizer, cpu_has_amx, env_threads, init_llama_cpp
from omnirun.errors import ModelLoadError
from omnirun.hardware import HardwareInfo, HardwarePlan, Placement

log = logging.getLogger(__name__)

MIN_CONTEXT = 1024
"""Smallest KV cache of a single sequence (tokens); it grows to what a call needs."""


class LlamaCppEngine(ConvenienceAPI):
    """Inference on a GGUF file with llama.cpp, from typed configs (`engine.build` makes one).

    `placement` is the device and backend chosen once by `engine.build`; without it the engine places
    itself when it loads (and raises ConfigError when llama.cpp cannot run the request).
    """

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
        self.tokenizer: GGUFTokenizer | None = None
        self._vocab_model: Any = None  # the vocabulary alone, while only load_tokenizer() has run
        self._model: Any = None
        self._context: LlamaContextHandle | None = None

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

    def load_tokenizer(self) -> GGUFTokenizer:
        """Resolve the GGUF file and load its vocabulary only: enough to check the chat template."""
        if self.tokenizer is None:
            self._vocab_model = load_gguf(self._gguf_path(), vocab_only=True)
            self.tokenizer = GGUFTokenizer(self._vocab_model)
        return self.tokenizer

    def _gguf_path(self) -> Path:
        source = models.resolve(self.model_config.name, self.model_config.gguf_file)
        if source.gguf_path is None:
            raise ModelLoadError(f"model {self.model_name!r} is not a GGUF file; the llama.cpp backend runs GGUF only")
        self.source = source
        return source.gguf_path

    def load_model(self) -> Self:
        """Load the GGUF weights (memory-mapped) and plan threads and batch size. A no-op when loaded."""
        if self.is_loaded:
            return self
        start = time.perf_counter()
        model = load_gguf(self._gguf_path(), vocab_only=False)  # memory-mapped: pages load on use
        self._model, self.tokenizer = model, GGUFTokenizer(model)
        if self._vocab_model is not None:  # load_tokenizer() came first
            self._vocab_model.close()
            self._vocab_model = None
        self.plan = self._plan(gguf_size(model))
        self.load_seconds = time.perf_counter() - start
        log.info(
            "loaded %s with llama.cpp in %.2fs (%d threads)", self.model_name, self.load_seconds, self.plan.num_threads
        )
        return self

    def _plan(self, size: hardware.ModelSize) -> hardware.HardwarePlan:
        """The hardware plan on this engine's placement, with the thread count llama.cpp will use."""
        info = self.info or hardware.detect()
        request = self.hardware_config
        placement = self.placement or hardware.place(replace(request, backend=Backend.llama_cpp), info, gguf=True)
        plan = hardware.plan(request, size, info, placement=placement)
        threads = plan.num_threads or env_threads() or info.cpu_cores
        reasons = {**plan.reasons, "device": "cpu: the llama.cpp backend runs on the CPU"}
        if not plan.num_threads and env_threads():
            reasons["num_threads"] = f"{threads} from OMP_NUM_THREADS"
        return replace(plan, num_threads=threads, reasons=reasons)

    def unload_model(self) -> None:
        """Free the context and the weights."""
        if self._context is not None:
            self._context.close()
        for obj in (self._model, self._vocab_model):
            if obj is not None:
                obj.close()
        self._context = self._model = self._vocab_model = self.tokenizer = None

    def _loaded(self) -> tuple[Any, GGUFTokenizer]:
        """The llama.cpp model and its tokenizer; RuntimeError when the weights are not loaded."""
        if self._model is None or self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return self._model, self.tokenizer

    def context(self, sequences: int, per_sequence: int) -> LlamaContextHandle:
        """An emptied context for `sequences` sequences of up to `per_sequence` tokens each, made anew only
        when the current one is too small."""
        model, _ = self._loaded()
        if self._context is None or not self._context.fits(sequences, per_sequence):
            if self._context is not None:
                self._context.close()
            cells = max(MIN_CONTEXT if sequences == 1 else 0, -(-per_sequence // 256) * 256)
            threads = self.plan.num_threads if self.plan else None
            self._context = LlamaContextHandle(model, sequences, cells, threads)
        self._context.clear()
        return self._context

    def check_task(self, task: TaskName) -> None:
        """A GGUF file holds a language model: llama.cpp serves the generation tasks, and nothing else."""
        capabilities.require_generation(task, "llama.cpp runs GGUF files for text generation only")

    def parameters(self) -> ParameterCount | None:
        """The GGUF model's parameter count (llama.cpp's n_params); nothing is trainable here."""
        return None if self._model is None else ParameterCount(int(self._model.n_params()), None)

    # ------------------------------------------------------------------------------------------------ queries
    def has_chat_template(self) -> bool:
        """Whether the GGUF file carries a chat template (needs `load_tokenizer()` or `load_model()` first)."""
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return self.tokenizer.chat_template is not None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the prompt text the model expects, ending with the assistant's turn."""
        _, tokenizer = self._loaded()
        if not self.has_chat_template():
            raise ValueError(f"model {self.model_name!r} has no chat template; use infer() with a plain prompt")
        return tokenizer.apply_chat_template(messages)

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        _, tokenizer = self._loaded()
        return len(tokenizer.encode(text, add_special_tokens))

    @property
    def max_context(self) -> int | None:
        """The context length the model was trained with."""
        model, _ = self._loaded()
        return int(model.n_ctx_train()) or None

    def memory(self) -> MemoryReport:
        import psutil

        footprint = self._model.size() / hardware.MB if self._model is not None else None
        rss = psutil.Process().memory_info().rss / hardware.MB
        return MemoryReport(model_footprint_mb=footprint, rss_mb=rss, cuda_allocated_mb=None, cuda_reserved_mb=None)

    # ------------------------------------------------------------------------------------------- generation
    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        """Complete `texts` together (one decoding pass per step over every unfinished sequence)."""
        _, tokenizer = self._loaded()
        return self.generate_ids([tokenizer.encode(t, add_special_tokens) for t in texts], params, seed=seed)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        """Like `generate`, from token ids."""
        _, tokenizer = self._loaded()
        run = Decoder(ids, params, tokenizer.eos_ids, seed, vocab_model=self._model, template=tokenizer.template_text)
        ctx = self.context(len(ids), run.longest)
        start = time.perf_counter()
        times: list[float] = []
        for _ in run.steps(ctx):
            times.append(time.perf_counter() - start)
        e2e = time.perf_counter() - start
        ttft = times[0] if times else None
        return [
            Completion(
                tokenizer.decode(tokens), len(prompt), len(tokens), finish, e2e, ttft, times[: len(tokens)], tokens
            )
            for prompt, tokens, finish in zip(ids, run.tokens, run.finish, strict=True)
        ]

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> LlamaStream:
        """A stream of text pieces, decoded on this thread as they are produced."""
        _, tokenizer = self._loaded()
        prompt = tokenizer.encode(text, add_special_tokens)
        return LlamaStream(
            prompt,
            params,
            tokenizer.eos_ids,
            seed,
            open_context=self.context,
            detokenize=tokenizer.decode,
            vocab_model=self._model,
            template=tokenizer.template_text,
        )

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids`."""
        ctx = self.context(1, len(ids))
        out: list[int] = []
        for pos in range(0, len(ids), MAX_BATCH_TOKENS):
            chunk = ids[pos : pos + MAX_BATCH_TOKENS]
            ctx.fill([(token, pos + i, 0, True) for i, token in enumerate(chunk)])
            ctx.decode()
            out += ctx.logits(len(chunk)).argmax(axis=1).tolist()
        return out


def load_gguf(path: Path, *, vocab_only: bool) -> Any:
    """A llama.cpp model on a GGUF file (memory-mapped), or its vocabulary alone."""
    import llama_cpp
    from llama_cpp import _internals

    init_llama_cpp()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = vocab_only
    if hasattr(params, "use_extra_bufts") and cpu_has_amx():  # llama.cpp's AMX buffers have crashed there
        params.use_extra_bufts = False
    try:
        return _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    except Exception as exc:
        raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc


def gguf_size(model: Any) -> hardware.ModelSize:
    """Parameter count and KV-cache shape from a GGUF file's metadata."""
    meta = model.metadata()
    arch = meta.get("general.architecture", "llama")
    layers = int(meta.get(f"{arch}.block_count", 0))
    heads = int(meta.get(f"{arch}.attention.head_count", 0) or 0)
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads) or 0)
    width = int(meta.get(f"{arch}.embedding_length", 0))
    head_dim = width // heads if heads else 0
    return hardware.ModelSize(params=model.n_params(), num_layers=layers, kv_dim=kv_heads * head_dim)
