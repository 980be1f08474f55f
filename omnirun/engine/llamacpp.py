"""`LlamaCppEngine`: GGUF models on the CPU through llama.cpp (`llama-cpp-python`, an optional dependency).

The same API as `TransformersEngine` as far as the runner and tasks use it. A batch of prompts is decoded
together: one `llama_decode` per step serves every unfinished sequence (each its own `seq_id` and KV cells),
and a sequence that finishes leaves the batch. Sampling (greedy, temperature, top-k, top-p,
repetition penalty, min_new_tokens) follows Transformers' definitions, in numpy; beam search and
no_repeat_ngram_size are Transformers-only. No torch or transformers import on this path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from omnirun import hardware, models
from omnirun.config import Device, GenerationConfig, HardwareConfig
from omnirun.engine.base import NOT_LOADED, Completion, MemoryReport, SimpleAPI
from omnirun.errors import ModelLoadError

log = logging.getLogger(__name__)

MIN_CONTEXT = 1024
"""Smallest KV cache of a single sequence (tokens); it grows to what a call needs."""
MAX_BATCH_TOKENS = 512
"""Prompt tokens per `llama_decode` call during prefill."""


class LlamaCppEngine(SimpleAPI):
    """Inference on a GGUF file with llama.cpp.

    >>> with LlamaCppEngine("smollm2") as engine:
    ...     engine.chat([{"role": "user", "content": "What is the capital of France?"}], do_sample=False)
    """

    model_type = "causal-lm"

    def __init__(
        self,
        model_id: str = models.BUNDLED,
        gguf_file: str | None = None,
        num_threads: int | None = None,
        batch_size: int | None = None,
        generation: GenerationConfig | None = None,
        hardware_info: hardware.HardwareInfo | None = None,
        backend_reason: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.gguf_file = gguf_file
        self.request = HardwareConfig(device=Device.cpu, num_threads=num_threads)
        self.batch_size = batch_size
        self.default_generation = generation or GenerationConfig()
        self.default_generation.validate(prefix="")
        self.hardware_info = hardware_info
        self.backend_reason = backend_reason
        self.plan: hardware.HardwarePlan | None = None
        self.source: models.ModelSource | None = None
        self.load_seconds: float | None = None
        self.tokenizer: GGUFTokenizer | None = None
        self._vocab_model: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._ctx_size = (0, 0)  # (sequences, KV cells per sequence) of the current context
        self._batch: Any = None

    # ----------------------------------------------------------------------------------------------- loading
    @property
    def model_name(self) -> str:
        return self.model_id

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str:
        return "cpu"

    def __enter__(self) -> LlamaCppEngine:
        return self.load_model()

    def __exit__(self, *exc: object) -> None:
        self.unload_model()

    def load_tokenizer(self) -> GGUFTokenizer:
        """Resolve the GGUF file and load its vocabulary only: enough to check the chat template."""
        if self.tokenizer is None:
            self._vocab_model = self._load(self._gguf_path(), vocab_only=True)
            self.tokenizer = GGUFTokenizer(self._vocab_model)
        return self.tokenizer

    def _gguf_path(self) -> Path:
        source = models.resolve(self.model_id, self.gguf_file)
        if source.gguf_path is None:
            raise ModelLoadError(f"model {self.model_id!r} is not a GGUF file; the llama.cpp backend runs GGUF only")
        self.source = source
        return source.gguf_path

    def load_model(self) -> LlamaCppEngine:
        """Load the GGUF weights (memory-mapped) and plan threads and batch size. A no-op when loaded."""
        if self.is_loaded:
            return self
        start = time.perf_counter()
        self._model = self._load(self._gguf_path(), vocab_only=False)  # memory-mapped: pages load on use
        self.tokenizer = GGUFTokenizer(self._model)
        if self._vocab_model is not None:  # load_tokenizer() came first
            self._vocab_model.close()
            self._vocab_model = None
        info = self.hardware_info or hardware.detect()
        plan = hardware.plan(self.request, self._size(), info, backend="llama.cpp", backend_reason=self.backend_reason)
        threads = plan.num_threads or env_threads() or info.cpu_cores
        reasons = {**plan.reasons, "device": "cpu: the llama.cpp backend runs on the CPU"}
        if not plan.num_threads and env_threads():
            reasons["num_threads"] = f"{threads} from OMP_NUM_THREADS"
        self.plan = replace(plan, num_threads=threads, reasons=reasons)
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s with llama.cpp in %.2fs (%d threads)", self.model_id, self.load_seconds, threads)
        return self

    def _load(self, path: Path, *, vocab_only: bool) -> Any:
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

    def _size(self) -> hardware.ModelSize:
        meta = self._model.metadata()
        arch = meta.get("general.architecture", "llama")
        layers = int(meta.get(f"{arch}.block_count", 0))
        heads = int(meta.get(f"{arch}.attention.head_count", 0) or 0)
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads) or 0)
        width = int(meta.get(f"{arch}.embedding_length", 0))
        head_dim = width // heads if heads else 0
        return hardware.ModelSize(params=self._model.n_params(), num_layers=layers, kv_dim=kv_heads * head_dim)

    def unload_model(self) -> None:
        """Free the context and the weights."""
        for obj in (self._batch, self._ctx, self._model, self._vocab_model):
            if obj is not None:
                obj.close()
        self._batch = self._ctx = self._model = self._vocab_model = self.tokenizer = None
        self._ctx_size = (0, 0)

    def _require_loaded(self) -> None:
        if self._model is None:
            raise RuntimeError(NOT_LOADED)

    def _context(self, sequences: int, per_sequence: int) -> Any:
        """An emptied context for `sequences` sequences of up to `per_sequence` tokens each, made anew when the
        current one is too small. Each sequence has its own KV cells (not one unified cache): with many
        sequences, attention then only reads a sequence's own cells (2.6x the tokens/s of a unified cache at 64)."""
        import llama_cpp
        from llama_cpp import _internals

        have_seqs, have_cells = self._ctx_size
        if self._ctx is None or sequences > have_seqs or per_sequence > have_cells:
            if self._ctx is not None:
                self._batch.close()
                self._ctx.close()
            cells = max(MIN_CONTEXT if sequences == 1 else 0, -(-per_sequence // 256) * 256)
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = cells * sequences
            params.n_batch = params.n_ubatch = MAX_BATCH_TOKENS
            params.n_seq_max = sequences
            params.kv_unified = False
            assert self.plan is not None
            params.n_threads = params.n_threads_batch = self.plan.num_threads
            params.no_perf = True
            self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
            self._batch = _internals.LlamaBatch(n_tokens=MAX_BATCH_TOKENS, embd=0, n_seq_max=1, verbose=False)
            self._ctx_size = (sequences, cells)
        self._ctx.kv_cache_clear()
        return self._ctx

    # -------------------------------------------------------------------------------------------- public API
    def has_chat_template(self) -> bool:
        """Whether the GGUF file carries a chat template (needs `load_tokenizer()` or `load_model()` first)."""
        if self.tokenizer is None:
            raise RuntimeError(NOT_LOADED)
        return self.tokenizer.chat_template is not None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the prompt text the model expects, ending with the assistant's turn."""
        self._require_loaded()
        if not self.has_chat_template():
            raise ValueError(f"model {self.model_id!r} has no chat template; use infer() with a plain prompt")
        assert self.tokenizer is not None
        return self.tokenizer.apply_chat_template(messages)

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        self._require_loaded()
        assert self.tokenizer is not None
        return len(self.tokenizer.encode(text, add_special_tokens))

    @property
    def max_context(self) -> int | None:
        """The context length the model was trained with."""
        self._require_loaded()
        return int(self._model.n_ctx_train()) or None

    def memory(self) -> MemoryReport:
        import psutil

        footprint = self._model.size() / hardware.MB if self._model is not None else None
        rss = psutil.Process().memory_info().rss / hardware.MB
        return MemoryReport(model_footprint_mb=footprint, rss_mb=rss, cuda_allocated_mb=None, cuda_reserved_mb=None)

    # ------------------------------------------------------------------------------------------- generation
    def generate(
        self,
        texts: list[str],
        params: GenerationConfig,
        *,
        add_special_tokens: bool = True,
        seed: int | None = None,
    ) -> list[Completion]:
        """Complete `texts` together (one decoding pass per step over every unfinished sequence)."""
        self._require_loaded()
        assert self.tokenizer is not None
        return self.generate_ids([self.tokenizer.encode(t, add_special_tokens) for t in texts], params, seed=seed)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        """Like `generate`, from token ids."""
        self._require_loaded()
        run = Decoder(self, ids, params, seed)
        start = time.perf_counter()
        times: list[float] = []
        for _ in run.steps():
            times.append(time.perf_counter() - start)
        e2e = time.perf_counter() - start
        return [
            Completion(
                self._decode(tokens),
                len(prompt),
                len(tokens),
                finish,
                e2e,
                times[0] if times else None,
                times[: len(tokens)],
                tokens,
            )
            for prompt, tokens, finish in zip(ids, run.tokens, run.finish, strict=True)
        ]

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> LlamaStream:
        """A stream of text pieces, decoded on this thread as they are produced."""
        self._require_loaded()
        assert self.tokenizer is not None
        return LlamaStream(self, self.tokenizer.encode(text, add_special_tokens), params, seed)

    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids`."""
        import numpy as np

        self._require_loaded()
        ctx = self._context(1, len(ids))
        out = []
        for pos in range(0, len(ids), MAX_BATCH_TOKENS):
            chunk = ids[pos : pos + MAX_BATCH_TOKENS]
            self._fill([(token, pos + i, 0, True) for i, token in enumerate(chunk)])
            ctx.decode(self._batch)
            logits = np.ctypeslib.as_array(ctx.get_logits(), shape=(len(chunk), self._model.n_vocab()))
            out += logits.argmax(axis=1).tolist()
        return out

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Put (token, position, sequence, wants logits) entries into the batch."""
        batch = self._batch.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

    def _decode(self, tokens: list[int]) -> str:
        assert self.tokenizer is not None
        return self.tokenizer.decode(tokens)


class Decoder:
    """One generation over a batch of token-id prompts. `steps()` yields once per step, after every
    unfinished sequence got its next token; `tokens` and `finish` hold the results."""

    def __init__(self, engine: LlamaCppEngine, prompts: list[list[int]], params: GenerationConfig, seed: int | None):
        if params.num_beams > 1 or params.no_repeat_ngram_size > 0:
            raise ValueError(
                "the llama.cpp backend has no beam search or no_repeat_ngram_size; use hardware.backend=transformers"
            )
        if any(not p for p in prompts):
            raise ValueError("empty prompt: the llama.cpp backend needs at least one prompt token")
        self.engine, self.prompts, self.params = engine, prompts, params
        self.sampler = Sampler(params, engine.tokenizer.eos_ids if engine.tokenizer else set(), seed)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.finish = ["length"] * len(prompts)

    def steps(self) -> Iterator[None]:
        engine, params = self.engine, self.params
        longest = max(len(p) for p in self.prompts) + params.max_new_tokens
        ctx = engine._context(len(self.prompts), longest)
        logits = self._prefill(ctx)
        active = list(range(len(self.prompts)))
        while active:
            for row, seq in enumerate(active):
                self._accept(seq, self.sampler(logits[row], self.prompts[seq], self.tokens[seq]))
            yield
            active = [s for s in active if len(self.tokens[s]) < params.max_new_tokens and self.finish[s] != "stop"]
            if not active:
                break
            engine._fill(
                [(self.tokens[s][-1], len(self.prompts[s]) + len(self.tokens[s]) - 1, s, True) for s in active]
            )
            ctx.decode(engine._batch)
            logits = self._logits(ctx, len(active))

    def _accept(self, seq: int, token: int) -> None:
        self.tokens[seq].append(token)
        if token in self.sampler.eos:
            self.finish[seq] = "stop"

    def _prefill(self, ctx: Any) -> Any:
        """Feed every prompt (chunks of MAX_BATCH_TOKENS); return the last-position logits of each, in order."""
        import numpy as np

        entries = [
            (token, pos, seq, pos == len(prompt) - 1)
            for seq, prompt in enumerate(self.prompts)
            for pos, token in enumerate(prompt)
        ]
        rows = []
        for start in range(0, len(entries), MAX_BATCH_TOKENS):
            chunk = entries[start : start + MAX_BATCH_TOKENS]
            self.engine._fill(chunk)
            ctx.decode(self.engine._batch)
            wanted = sum(1 for e in chunk if e[3])
            if wanted:
                rows.append(self._logits(ctx, wanted).copy())
        return np.concatenate(rows)

    def _logits(self, ctx: Any, rows: int) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(ctx.get_logits(), shape=(rows, self.engine._model.n_vocab()))


class Sampler:
    """The next token from a row of logits, as Transformers' `generate` chooses it for these parameters:
    repetition penalty over prompt and output, end-of-sequence masked before min_new_tokens, then greedy
    argmax or temperature / top-k / top-p sampling."""

    def __init__(self, params: GenerationConfig, eos: set[int], seed: int | None) -> None:
        import numpy as np

        self.params, self.eos = params, eos
        self.eos_list = sorted(eos)
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: Any, prompt: list[int], output: list[int]) -> int:
        """The next token after `prompt` and the `output` so far."""
        import numpy as np

        p = self.params
        scores = logits.astype(np.float32, copy=True)
        if p.repetition_penalty != 1.0:
            seen = np.unique(np.asarray(prompt + output, dtype=np.int64))
            s = scores[seen]
            scores[seen] = np.where(s < 0, s * p.repetition_penalty, s / p.repetition_penalty)
        if p.min_new_tokens and self.eos_list and len(output) < p.min_new_tokens:
            scores[self.eos_list] = -np.inf
        if not p.do_sample:
            return int(scores.argmax())
        return self._sample(scores)

    def _sample(self, scores: Any) -> int:
        import numpy as np

        p = self.params
        if p.temperature != 1.0:
            scores = scores / p.temperature
        if 0 < p.top_k < scores.shape[0]:
            candidates = np.argpartition(scores, -p.top_k)[-p.top_k :]
        else:
            candidates = np.arange(scores.shape[0])
        cand = scores[candidates]
        order = np.argsort(-cand, kind="stable")
        candidates, cand = candidates[order], cand[order]
        probs = np.exp(cand - cand.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = (np.cumsum(probs) - probs) < p.top_p  # keep while the mass before a token is below top_p
            candidates, probs = candidates[keep], probs[keep] / probs[keep].sum()
        return int(candidates[self.rng.choice(len(candidates), p=probs)])


class LlamaStream:
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings."""

    def __init__(self, engine: LlamaCppEngine, ids: list[int], params: GenerationConfig, seed: int | None) -> None:
        self.engine, self.ids, self.params, self.seed = engine, ids, params, seed
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        run = Decoder(self.engine, [self.ids], self.params, self.seed)
        tokens = run.tokens[0]
        start = time.perf_counter()
        times: list[float] = []
        shown = ""
        for _ in run.steps():
            times.append(time.perf_counter() - start)
            text = self.engine._decode(tokens)
            if text.startswith(shown) and not text.endswith("\ufffd") and len(text) > len(shown):
                piece, shown = text[len(shown) :], text
                yield piece
        final = self.engine._decode(tokens)
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]
        e2e = time.perf_counter() - start
        ttft = times[0] if times else None
        self.completion = Completion(final, len(self.ids), len(tokens), run.finish[0], e2e, ttft, times, tokens)


class GGUFTokenizer:
    """The GGUF file's own tokenizer and chat template, through llama.cpp (what the runner needs of one)."""

    def __init__(self, model: Any) -> None:
        import llama_cpp

        self._model = model
        self._llama_cpp = llama_cpp
        self.add_bos = bool(model.add_bos_token())
        self.eos_token_id = model.token_eos()
        self.eos_ids = {self.eos_token_id} if self.eos_token_id >= 0 else set()  # as Transformers stops
        self.chat_template = self._chat_template()
        self._special: list[int] | None = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; special tokens written in the text (`<|im_start|>`) are parsed as such."""
        return self._model.tokenize(text.encode("utf-8"), add_special_tokens and self.add_bos, True)

    def decode(self, tokens: list[int]) -> str:
        """Text of `tokens`, special tokens skipped."""
        return self._model.detokenize(tokens, special=False).decode("utf-8", errors="replace")

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def __len__(self) -> int:
        return int(self._model.n_vocab())

    @property
    def all_special_ids(self) -> list[int]:
        """Control and unknown tokens."""
        if self._special is None:
            lc = self._llama_cpp
            mask = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_UNKNOWN
            self._special = [t for t in range(len(self)) if self._model.token_get_attr(t) & mask]
        return self._special

    def _chat_template(self) -> Any:
        raw = self._llama_cpp.llama_model_chat_template(self._model.model, None)
        if not raw:
            return None
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        return env.from_string(raw.decode("utf-8"))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Render like Transformers' `apply_chat_template(..., add_generation_prompt=True)`."""
        model = self._model
        bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
        eos = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""
        return self.chat_template.render(messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)


_BACKEND_READY = False


def cpu_has_amx() -> bool:
    """Whether the CPU advertises AMX (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_tile" in line for line in f)
    except OSError:
        return False


def env_threads() -> int | None:
    """OMP_NUM_THREADS when set, as torch honours it too."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def init_llama_cpp() -> None:
    """Initialise llama.cpp's backend once, with its log (model loading chatter) limited to errors."""
    global _BACKEND_READY
    if _BACKEND_READY:
        return
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)
    llama_cpp.llama_backend_init()
    _BACKEND_READY = True
