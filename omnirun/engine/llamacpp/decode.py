"""Batched decoding and Transformers-compatible sampling on a llama.cpp context, with each sequence's
response_format enforced by the constrained decoder the Transformers backend uses too (llguidance, see
`omnirun.structured`; its tokenizer is read from the GGUF vocabulary), masking before greedy choice or sampling."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from omnirun import reasoning
from omnirun.config import GenerationConfig
from omnirun.engine.base import Completion
from omnirun.engine.llamacpp.context import MAX_BATCH_TOKENS, LlamaContextHandle
from omnirun.structured import Grammars, RowConstraints

OpenContext = Callable[[int, int], LlamaContextHandle]
"""An emptied context for (sequences, tokens per sequence)."""


class Decoder:
    """One generation over a batch of token-id prompts. `steps(ctx)` yields once per step, after every
    unfinished sequence got its next token; `tokens` and `finish` hold the results.

    `formats` gives each prompt its own response_format (None: each takes `params.response_format`);
    `vocab_model` is the llama.cpp model whose vocabulary the formats compile against (None: the context's);
    `template` (the model's chat template) says whether a format starts after a thinking block
    (`omnirun.reasoning.format_after`)."""

    def __init__(
        self,
        prompts: list[list[int]],
        params: GenerationConfig,
        eos: set[int],
        seed: int | None,
        *,
        formats: Sequence[dict[str, Any] | None] | None = None,
        vocab_model: Any = None,
        template: str | None = None,
    ) -> None:
        self.after = reasoning.format_after(params.reasoning, template)
        if params.num_beams > 1 or params.no_repeat_ngram_size > 0:
            raise ValueError(
                "the llama.cpp backend has no beam search or no_repeat_ngram_size; use hardware.backend=transformers"
            )
        if any(not p for p in prompts):
            raise ValueError("empty prompt: the llama.cpp backend needs at least one prompt token")
        self.formats = [params.response_format] * len(prompts) if formats is None else list(formats)
        if len(self.formats) != len(prompts):
            raise ValueError(f"{len(self.formats)} response formats for {len(prompts)} prompts")
        self.prompts, self.params, self.eos = prompts, params, eos
        self.vocab_model = vocab_model
        self.sampler = Sampler(params, eos, seed)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.finish = ["length"] * len(prompts)
        self.constraints: RowConstraints | None = None
        if vocab_model is not None:
            self.constraints = self._constrain(vocab_model)  # a format that does not compile raises now

    @property
    def longest(self) -> int:
        """Tokens the longest sequence may reach: the KV cells each sequence needs."""
        return max(len(p) for p in self.prompts) + self.params.max_new_tokens

    def _constrain(self, model: Any) -> RowConstraints | None:
        """The matchers of the prompts that have a format (None when none has)."""
        if all(f is None for f in self.formats):
            return None
        return llama_grammars(model, self.eos).rows(self.formats, self.after)

    def steps(self, ctx: LlamaContextHandle) -> Iterator[None]:
        if self.constraints is None and any(f is not None for f in self.formats):
            self.constraints = self._constrain(context_model(ctx))
        logits = self._prefill(ctx)
        active = list(range(len(self.prompts)))
        while active:
            masks = self._masks(active, logits.shape[1])
            for row, seq in enumerate(active):
                token = self.sampler(logits[row], self.prompts[seq], self.tokens[seq], masks.get(seq))
                self._accept(seq, token)
                if self.constraints is not None:
                    self.constraints.advance(seq, token)
            yield
            active = [s for s in active if len(self.tokens[s]) < self.params.max_new_tokens and not self._stopped(s)]
            if not active:
                break
            ctx.fill([(self.tokens[s][-1], len(self.prompts[s]) + len(self.tokens[s]) - 1, s, True) for s in active])
            ctx.decode()
            logits = ctx.logits(len(active))

    def _masks(self, active: list[int], width: int) -> dict[int, Any]:
        """{sequence: the tokens it may take next} for the active sequences still held to a format."""
        if self.constraints is None:
            return {}
        live = set(self.constraints.live())
        held = [s for s in active if s in live]
        return dict(zip(held, self.constraints.masks(held, width), strict=True)) if held else {}

    def _accept(self, seq: int, token: int) -> None:
        self.tokens[seq].append(token)
        if token in self.sampler.eos:
            self.finish[seq] = "stop"

    def _stopped(self, seq: int) -> bool:
        return self.finish[seq] == "stop"

    def _prefill(self, ctx: LlamaContextHandle) -> Any:
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
            ctx.fill(chunk)
            ctx.decode()
            wanted = sum(1 for e in chunk if e[3])
            if wanted:
                rows.append(ctx.logits(wanted).copy())
        return np.concatenate(rows)


class Sampler:
    """The next token from a row of logits, as Transformers' `generate` chooses it for these parameters:
    repetition penalty over prompt and output, end-of-sequence masked before min_new_tokens, the response
    format's mask (`allowed`; when nothing it allows is left, its tokens become equally likely, as on the
    Transformers backend), then greedy argmax or temperature / top-k / top-p sampling."""

    def __init__(self, params: GenerationConfig, eos: set[int], seed: int | None) -> None:
        import numpy as np

        self.params, self.eos = params, eos
        self.eos_list = sorted(eos)
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: Any, prompt: list[int], output: list[int], allowed: Any = None) -> int:
        """The next token after `prompt` and the `output` so far; only a token `allowed` (a bool array over the
        vocabulary) when given."""
        import numpy as np

        p = self.params
        scores = logits.astype(np.float32, copy=True)
        if p.repetition_penalty != 1.0:
            seen = np.unique(np.asarray(prompt + output, dtype=np.int64))
            s = scores[seen]
            scores[seen] = np.where(s < 0, s * p.repetition_penalty, s / p.repetition_penalty)
        if p.min_new_tokens and self.eos_list and len(output) < p.min_new_tokens:
            scores[self.eos_list] = -np.inf
        if allowed is not None:
            scores[~allowed] = -np.inf
            if not np.isfinite(scores).any():
                scores = np.where(allowed, np.float32(0.0), np.float32(-np.inf))
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
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings.
    Parameters are checked when the stream is made (with `vocab_model`, the llama.cpp model, its response_format
    is compiled then too); the context is taken when iteration starts."""

    def __init__(
        self,
        prompt: list[int],
        params: GenerationConfig,
        eos: set[int],
        seed: int | None,
        *,
        open_context: OpenContext,
        detokenize: Callable[[list[int]], str],
        vocab_model: Any = None,
        template: str | None = None,
    ) -> None:
        Decoder([prompt], params, eos, seed, vocab_model=vocab_model, template=template)  # raises now, not later
        self.prompt, self.params, self.eos, self.seed = prompt, params, eos, seed
        self.vocab_model, self.template = vocab_model, template
        self.open_context, self.detokenize = open_context, detokenize
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        run = Decoder(
            [self.prompt], self.params, self.eos, self.seed, vocab_model=self.vocab_model, template=self.template
        )
        tokens = run.tokens[0]
        ctx = self.open_context(1, run.longest)
        start = time.perf_counter()
        times: list[float] = []
        shown = ""
        for _ in run.steps(ctx):
            times.append(time.perf_counter() - start)
            text = self.detokenize(tokens)
            if text.startswith(shown) and not text.endswith("\ufffd") and len(text) > len(shown):
                piece, shown = text[len(shown) :], text
                yield piece
        final = self.detokenize(tokens)
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]
        e2e = time.perf_counter() - start
        ttft = times[0] if times else None
        self.completion = Completion(final, len(self.prompt), len(tokens), run.finish[0], e2e, ttft, times, tokens)


_GRAMMARS: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Grammars]] = weakref.WeakKeyDictionary()
"""llama.cpp model -> {end-of-sequence ids: its Grammars}: each format compiled once per loaded model."""


def llama_grammars(model: Any, eos: set[int]) -> Grammars:
    """The compiled-format cache of a llama.cpp model (`llama_cpp._internals.LlamaModel`), made on first use from
    its vocabulary. The llguidance tokenizer calls into that vocabulary: it is dropped with the model."""
    if getattr(model, "model", None) is None:
        raise ValueError("response_format: the llama.cpp model is closed; load it again")
    key = tuple(sorted(eos))
    per_model = _GRAMMARS.setdefault(model, {})
    if key not in per_model:
        per_model[key] = Grammars(llguidance_tokenizer(model.vocab, list(key)), key)
    return per_model[key]


def llguidance_tokenizer(vocab: Any, eos: list[int]) -> Any:
    """An `llguidance.LLTokenizer` over a llama.cpp vocabulary: each token's bytes (control tokens marked with a
    0xFF prefix, as llguidance expects), with llama.cpp's own tokenize function. What `llguidance.llamacpp`
    does, through the llama.cpp calls that are not deprecated."""
    import ctypes

    import llama_cpp

    try:
        from llguidance import LLTokenizer
    except ImportError as exc:
        raise ValueError(f"response_format needs the llguidance package ({exc}); pip install llguidance") from None
    size = 16 * 1024
    buffer = ctypes.create_string_buffer(size + 1)
    tokens: list[bytes] = []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, True)
        if n < 0:
            raise ValueError(f"response_format: token {token} of the GGUF vocabulary is over {size} bytes")
        piece = buffer.raw[:n]
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        control = attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        user_special = attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED and piece[:1] == b"<" and piece[-1:] == b">"
        tokens.append(b"\xff" + piece if control or user_special else piece)
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=eos or None, slices=None
    )


def context_model(ctx: LlamaContextHandle) -> Any:
    """The llama.cpp model a context runs on (llama_cpp's `LlamaContext.model`), for a Decoder not given one."""
    model = getattr(getattr(ctx, "_ctx", None), "model", None)
    if model is None:
        raise ValueError("response_format: this llama.cpp context does not expose its model; pass vocab_model=")
    return model
