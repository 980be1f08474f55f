"""`TransformersEngine`: load any causal-LM or seq2seq model and run single, batched, streamed and chat
generation on it.

Streaming runs its own decode loop on the calling thread (no generate thread, no TextIteratorStreamer):
torch work on a second thread was measured 1.8x slower on 2 cores.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import inspect
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from omnirun import hardware, models
from omnirun.config import Device, DType, GenerationConfig, HardwareConfig, Quantization
from omnirun.engine.base import NOT_LOADED, Completion, MemoryReport, SimpleAPI
from omnirun.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)


class TransformersEngine(SimpleAPI):
    """Inference on a Hugging Face Transformers model.

    >>> with TransformersEngine("smollm2") as engine:
    ...     engine.chat([{"role": "user", "content": "What is the capital of France?"}], do_sample=False)

    `auto_config=True` lets the hardware planner choose device, dtype, quantization and batch size for the
    values left at `auto`; `auto_config=False` uses the given values as they are (fp32 on CPU, CUDA if present).
    `optimize=True` (with auto_config) also applies the planner's measured CPU speed-up: int4 decoding copies of
    Linear layers whose weights are exactly 4-bit (a GGUF's), used for single streams (`plan.cpu_int4_decode`);
    `optimize=False` keeps plain fp32.
    Generation defaults follow the seed table: max_new_tokens=100, temperature=0.7, top_p=0.9, top_k=50,
    repetition_penalty=1.0, do_sample=True.
    """

    def __init__(
        self,
        model_id: str = models.BUNDLED,
        auto_config: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        quantization: str | None = None,
        trust_remote_code: bool = False,
        model_type: str | None = None,
        attn_implementation: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[str, str] | None = None,
        low_cpu_mem_usage: bool = True,
        revision: str | None = None,
        cache_dir: str | None = None,
        gguf_file: str | None = None,
        allow_pickle: bool = False,
        batch_size: int | None = None,
        num_threads: int | None = None,
        generation: GenerationConfig | None = None,
        hardware_info: hardware.HardwareInfo | None = None,
        optimize: bool = True,
        backend_reason: str | None = None,
    ) -> None:
        if model_type is not None and model_type not in ("causal-lm", "seq2seq"):
            raise ValueError(f"model_type must be 'causal-lm', 'seq2seq' or None, got {model_type!r}")
        self.model_id = model_id
        self.auto_config = auto_config
        self.request = HardwareConfig(
            device=_enum("device", Device, device),
            dtype=_enum("dtype", DType, dtype),
            quantization=None if quantization is None else _enum("quantization", Quantization, quantization),
            device_map=device_map,
            max_memory=max_memory,
            num_threads=num_threads,
        )
        self.request.validate()
        self.trust_remote_code = trust_remote_code
        self.model_type = model_type
        self.attn_implementation = attn_implementation
        self.low_cpu_mem_usage = low_cpu_mem_usage
        self.revision = revision
        self.cache_dir = cache_dir
        self.gguf_file = gguf_file
        self.allow_pickle = allow_pickle
        self.batch_size = batch_size
        self.default_generation = generation or GenerationConfig()
        self.default_generation.validate(prefix="")
        self.hardware_info = hardware_info
        self.optimize = optimize
        self.backend_reason = backend_reason
        self.model: Any = None
        self.tokenizer: Any = None
        self._config: Any = None
        self._path = ""
        self._common: dict[str, Any] = {}
        self.plan: hardware.HardwarePlan | None = None
        self.source: models.ModelSource | None = None
        self.load_seconds: float | None = None

    # ----------------------------------------------------------------------------------------------- loading
    @property
    def model_name(self) -> str:
        return self.model_id

    @property
    def is_loaded(self) -> bool:
        return self.model is not None

    @property
    def device(self) -> str:
        return self.plan.device if self.plan else "cpu"

    def __enter__(self) -> TransformersEngine:
        return self.load_model()

    def __exit__(self, *exc: object) -> None:
        self.unload_model()

    def load_tokenizer(self) -> Any:
        """Resolve the model (converting a GGUF file on first use) and load its config and tokenizer, without
        the weights: enough to check a chat template before paying for the weights."""
        if self.tokenizer is not None:
            return self.tokenizer
        import transformers

        source = models.resolve(self.model_id, self.gguf_file)
        path, gguf_file = source.path, source.gguf_file
        if source.is_gguf:  # one loading path for everything: GGUF becomes a cached dense folder first
            path, gguf_file = str(self._dense_copy(source)), None
        common = {"revision": self.revision, "trust_remote_code": self.trust_remote_code, "cache_dir": self.cache_dir}
        if gguf_file:
            common["gguf_file"] = gguf_file
        try:
            self._config = transformers.AutoConfig.from_pretrained(path, **common)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
        except Exception as exc:  # hub unreachable, missing files, unsupported architecture, ...
            raise models.describe_load_failure(source, exc) from exc
        self.model_type = self.model_type or ("seq2seq" if self._config.is_encoder_decoder else "causal-lm")
        prepare_tokenizer(tokenizer, self.model_type)
        self.source, self._path, self._common, self.tokenizer = source, path, common, tokenizer
        return tokenizer

    def load_model(self) -> TransformersEngine:
        """Resolve the model, plan the hardware, and load tokenizer and weights. A no-op when loaded."""
        if self.is_loaded:
            return self
        import torch

        start = time.perf_counter()
        self.load_tokenizer()
        assert self.source is not None
        model_cls = self._model_class()
        info = self.hardware_info or hardware.detect()
        if not info.int4_kernels:  # detect() leaves it unknown when it did not need torch
            info = replace(info, int4_kernels=hardware.torch_int4_kernels())
        self.plan = hardware.plan(
            self.request,
            estimate_size(model_cls, self._config),
            info,
            auto=self.auto_config,
            optimize=self.optimize,
            backend_reason=self.backend_reason,
        )
        try:
            model = model_cls.from_pretrained(self._path, **self._common, **self._weight_kwargs(torch))
        except (ConfigError, ModelLoadError):
            raise
        except Exception as exc:
            raise models.describe_load_failure(self.source, exc) from exc
        if self.plan.device_map is None and self.plan.quantization is None:
            model.to(self.plan.device)
        model.eval()
        if self.plan.cpu_int4_decode:
            self.plan = add_int4_decode(model, self.plan)
        if self.plan.num_threads:
            torch.set_num_threads(self.plan.num_threads)
        self.model = model
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s in %.2fs on %s (%s)", self.model_id, self.load_seconds, self.plan.device, self.plan.dtype)
        return self

    def _dense_copy(self, source: models.ModelSource) -> Path:
        """The dense safetensors folder for a GGUF source, converting it on first use."""
        import transformers

        gguf = source.gguf_path
        assert gguf is not None
        cached = models.dense_cache_dir(gguf)
        if models.is_complete(cached):
            return cached
        log.warning("converting %s to a dense safetensors cache; this happens once", gguf.name)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
            config = transformers.AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file)
            cls = transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModelForCausalLM
            model = cls.from_pretrained(source.path, gguf_file=source.gguf_file)
        except Exception as exc:
            raise models.describe_load_failure(source, exc) from exc
        folder = models.write_dense_cache(model, tokenizer, gguf)
        del model
        gc.collect()
        return folder

    def _model_class(self) -> Any:
        import transformers

        if self.model_type == "seq2seq":
            return transformers.AutoModelForSeq2SeqLM
        return transformers.AutoModelForCausalLM

    def _weight_kwargs(self, torch: Any) -> dict[str, Any]:
        assert self.plan is not None
        kwargs: dict[str, Any] = {
            "dtype": getattr(torch, self.plan.dtype),
            "low_cpu_mem_usage": self.low_cpu_mem_usage,
            "use_safetensors": None if self.allow_pickle else True,
        }
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.plan.device_map is not None:
            kwargs["device_map"] = self.plan.device_map
            if self.plan.max_memory:
                kwargs["max_memory"] = {_device_key(k): v for k, v in self.plan.max_memory.items()}
        if self.plan.quantization:
            kwargs["quantization_config"] = bnb_config(self.plan.quantization, self.plan.dtype, torch)
            kwargs.setdefault("device_map", {"": self.plan.device})
        return kwargs

    def unload_model(self) -> None:
        """Drop the weights and tokenizer and give their memory back (RSS and CUDA cache)."""
        if self.model is None and self.tokenizer is None:
            return
        self.model = self.tokenizer = self._config = None
        release_memory()

    def _require_loaded(self) -> None:
        if self.model is None:
            raise RuntimeError(NOT_LOADED)

    # -------------------------------------------------------------------------------------------- public API
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (needs `load_tokenizer()` or `load_model()` first)."""
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the prompt text the model expects, ending with the assistant's turn."""
        self._require_loaded()
        if not self.has_chat_template():
            raise ValueError(
                f"model {self.model_id!r} has no chat template; use infer() with a plain prompt, "
                "or a chat model such as smollm2"
            )
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        self._require_loaded()
        return len(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    @property
    def max_context(self) -> int | None:
        """The model's context length, when its config says."""
        self._require_loaded()
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, name, None)
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
        self,
        texts: list[str],
        params: GenerationConfig,
        *,
        add_special_tokens: bool = True,
        seed: int | None = None,
    ) -> list[Completion]:
        """One `model.generate` call over `texts` (one batch, left-padded for decoder-only models)."""
        self._require_loaded()
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        return self._generate_encoded(enc, params, seed)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        """Like `generate`, from token ids (e.g. synthetic prompts of an exact length)."""
        self._require_loaded()
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        return self._generate_encoded(enc, params, seed)

    def _generate_encoded(self, enc: Any, params: GenerationConfig, seed: int | None) -> list[Completion]:
        import torch

        enc = enc.to(self.model.device)
        input_tokens = enc["attention_mask"].sum(dim=1).tolist()
        if seed is not None:
            torch.manual_seed(seed)
        timer = StepTimer() if params.num_beams == 1 else None
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=self._generation_config(params), streamer=timer)
        synchronize(self.device)
        e2e = time.perf_counter() - start
        new = out[:, enc["input_ids"].shape[1] :] if self.model_type == "causal-lm" else out[:, 1:]
        steps = [t - start for t in timer.token_times] if timer else []
        completions = []
        for row, n_in in zip(new.tolist(), input_tokens, strict=True):
            tokens, finish = self._trim(row, params.max_new_tokens)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            ttft = steps[0] if steps else None
            completions.append(
                Completion(text, int(n_in), len(tokens), finish, e2e, ttft, steps[: len(tokens)], tokens)
            )
        return completions

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids` (one forward pass; causal LMs only)."""
        import torch

        self._require_loaded()
        if self.model_type != "causal-lm":
            raise ValueError("argmax_next needs a causal LM")
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.model.device)).logits
        return logits[0].argmax(dim=-1).tolist()

    def next_logits(self, ids: list[int]) -> Any:
        """The fp32 logits of the token after `ids` (a 1-D tensor; causal LMs only)."""
        import torch

        self._require_loaded()
        with torch.inference_mode():
            return self.model(input_ids=torch.tensor([ids], device=self.model.device)).logits[0, -1].float().cpu()

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> TokenStream:
        """A stream of text pieces from a decode loop on this thread; see `TokenStream`."""
        self._require_loaded()
        if params.num_beams > 1:
            raise ValueError(f"streaming cannot use beam search (num_beams={params.num_beams}); set num_beams=1")
        return TokenStream(self, text, params, add_special_tokens, seed)

    def _generation_config(self, params: GenerationConfig) -> Any:
        gc_ = copy.deepcopy(self.model.generation_config)
        sampling = params.do_sample
        gc_.update(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.min_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=params.top_k if sampling else None,
            repetition_penalty=params.repetition_penalty,
            num_beams=params.num_beams,
            early_stopping=params.early_stopping,
            no_repeat_ngram_size=params.no_repeat_ngram_size,
            length_penalty=params.length_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if gc_.eos_token_id is None:
            gc_.eos_token_id = self.tokenizer.eos_token_id
        return gc_

    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _trim(self, row: list[int], max_new: int) -> tuple[list[int], str]:
        """Cut a generated row at its first end-of-sequence token (kept) and drop padding after it."""
        eos = self.eos_ids()
        for i, token in enumerate(row):
            if token in eos:
                return row[: i + 1], "stop"
        pad = self.tokenizer.pad_token_id
        while row and pad is not None and row[-1] == pad and len(row) < max_new:
            row = row[:-1]
        return row, "length"


class TokenStream:
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings.

    The loop is the plain decode loop (prefill once, then one token at a time through the KV cache) with the
    same logits processors `generate` uses, so greedy output equals `generate`'s.
    """

    def __init__(
        self,
        engine: TransformersEngine,
        text: str,
        params: GenerationConfig,
        add_special_tokens: bool,
        seed: int | None,
    ) -> None:
        self.engine, self.text, self.params = engine, text, params
        self.add_special_tokens, self.seed = add_special_tokens, seed
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        import torch

        engine, params = self.engine, self.params
        tokenizer, model = engine.tokenizer, engine.model
        enc = tokenizer(self.text, return_tensors="pt", add_special_tokens=self.add_special_tokens).to(model.device)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        eos = engine.eos_ids()
        start_len = 1 if engine.model_type == "seq2seq" else enc["input_ids"].shape[1]  # the history decode_steps keeps
        processors = logits_processors(params, start_len, sorted(eos), model.device)
        start = time.perf_counter()
        times: list[float] = []
        tokens: list[int] = []
        shown = ""
        finish = "length"
        with torch.inference_mode():
            steps = decode_steps(model, engine.model_type, enc, processors, params.do_sample)
            for token in steps:
                times.append(time.perf_counter() - start)
                tokens.append(token)
                if token in eos:
                    finish = "stop"
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                if text.startswith(shown) and not text.endswith("\ufffd") and len(text) > len(shown):
                    piece, shown = text[len(shown) :], text
                    yield piece
                if finish == "stop" or len(tokens) >= params.max_new_tokens:
                    steps.close()
                    break
        final = tokenizer.decode(tokens, skip_special_tokens=True)
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]
        e2e = time.perf_counter() - start
        ttft = times[0] if times else None
        n_in = int(enc["attention_mask"].sum())
        self.completion = Completion(final, n_in, len(tokens), finish, e2e, ttft, times, tokens)


def decode_steps(model: Any, model_type: str, enc: Any, processors: Any, sample: bool) -> Iterator[int]:
    """Yield new token ids forever (the caller stops): prefill, then one cached forward pass per token."""
    import torch

    input_ids, mask = enc["input_ids"], enc["attention_mask"]
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    if model_type == "seq2seq":
        encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=mask)
        start_id = model.generation_config.decoder_start_token_id
        if start_id is None:
            start_id = model.config.decoder_start_token_id
        history = torch.tensor([[start_id]], device=input_ids.device)
        out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=history, use_cache=True)
    else:
        history = input_ids
        out = model(input_ids=input_ids, attention_mask=mask, use_cache=True, **extra)
    while True:
        scores = processors(history, out.logits[:, -1, :].float())
        if sample:
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
        else:
            token = scores.argmax(dim=-1, keepdim=True)
        yield int(token)
        history = torch.cat([history, token], dim=-1)
        past = out.past_key_values
        if model_type == "seq2seq":
            out = model(
                encoder_outputs=encoder_outputs,
                attention_mask=mask,
                decoder_input_ids=token,
                past_key_values=past,
                use_cache=True,
            )
        else:
            mask = torch.cat([mask, mask.new_ones((1, 1))], dim=-1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=past, use_cache=True, **extra)


def logits_processors(params: GenerationConfig, prompt_len: int, eos: list[int], device: Any) -> Any:
    """The processors `generate` would apply for these parameters (penalties, then sampling warpers)."""
    from transformers.generation import (
        LogitsProcessorList,
        MinNewTokensLengthLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    if params.min_new_tokens and eos:
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_len, params.min_new_tokens, eos, device=device))
    if params.do_sample:
        if params.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            procs.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            procs.append(TopPLogitsWarper(params.top_p))
    return procs


class StepTimer:
    """A `generate` streamer that notes when each decoding step produced its tokens (same thread, ~no cost;
    on CUDA, generate hands it tokens already copied to the CPU, so the times are synchronized)."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.token_times: list[float] = []

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt (or the decoder start token)
            self.prompt_seen = True
            return
        self.token_times.append(time.perf_counter())

    def end(self) -> None:
        pass


def add_int4_decode(model: Any, plan: hardware.HardwarePlan) -> hardware.HardwarePlan:
    """Apply `optimize.add_int4_decode` and record in the plan how many layers qualified."""
    from omnirun import optimize

    linear = sum(type(m).__name__ == "Linear" for m in model.modules())
    changed = optimize.add_int4_decode(model)
    reasons = dict(plan.reasons)
    reasons["cpu_int4_decode"] += f" [{changed} of {linear} Linear layers qualified]"
    return replace(plan, cpu_int4_decode=changed > 0, reasons=reasons)


def estimate_size(model_cls: Any, config: Any) -> hardware.ModelSize:
    """Parameter count (exact, from an empty meta-device model) and KV-cache shape of a config."""
    import torch

    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in model_cls.from_config(config).parameters())
    except Exception:  # exotic architectures: fall back to a rough count from the config
        hidden = getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0)
        layers = getattr(config, "num_hidden_layers", 0) or getattr(config, "num_layers", 0)
        params = 12 * layers * hidden * hidden + getattr(config, "vocab_size", 0) * hidden
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text_cfg, "num_hidden_layers", 0) or getattr(text_cfg, "num_layers", 0) or 0
    heads = getattr(text_cfg, "num_attention_heads", 0) or getattr(text_cfg, "num_heads", 0) or 0
    hidden = getattr(text_cfg, "hidden_size", 0) or getattr(text_cfg, "d_model", 0) or 0
    head_dim = getattr(text_cfg, "head_dim", None) or (hidden // heads if heads else 0)
    kv_heads = getattr(text_cfg, "num_key_value_heads", None) or heads
    return hardware.ModelSize(params=int(params), num_layers=int(layers), kv_dim=int(kv_heads * head_dim))


def prepare_tokenizer(tokenizer: Any, model_type: str) -> None:
    """Batching needs a pad token; decoder-only models need left padding so new tokens follow the prompt."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left" if model_type == "causal-lm" else "right"


def bnb_config(quantization: str, dtype: str, torch: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, "bfloat16" if dtype == "float32" else dtype),
    )


def synchronize(device: str) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def release_memory() -> None:
    """Collect garbage, empty the CUDA cache and return freed heap pages to the OS (glibc malloc_trim)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _device_key(key: str | int) -> str | int:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _enum(name: str, enum: Any, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None
