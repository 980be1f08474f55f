"""Batched decoding and Transformers-compatible sampling on a llama.cpp context."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from omnirun.config import GenerationConfig
from omnirun.engine.base import Completion
from omnirun.engine.llamacpp.context import MAX_BATCH_TOKENS, LlamaContextHandle

OpenContext = Callable[[int, int], LlamaContextHandle]
"""An emptied context for (sequences, tokens per sequence)."""


class Decoder:
    """One generation over a batch of token-id prompts. `steps(ctx)` yields once per step, after every
    unfinished sequence got its next token; `tokens` and `finish` hold the results."""

    def __init__(self, prompts: list[list[int]], params: GenerationConfig, eos: set[int], seed: int | None) -> None:
        if params.num_beams > 1 or params.no_repeat_ngram_size > 0:
            raise ValueError(
                "the llama.cpp backend has no beam search or no_repeat_ngram_size; use hardware.backend=transformers"
            )
        if any(not p for p in prompts):
            raise ValueError("empty prompt: the llama.cpp backend needs at least one prompt token")
        self.prompts, self.params = prompts, params
        self.sampler = Sampler(params, eos, seed)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.finish = ["length"] * len(prompts)

    @property
    def longest(self) -> int:
        """Tokens the longest sequence may reach: the KV cells each sequence needs."""
        return max(len(p) for p in self.prompts) + self.params.max_new_tokens

    def steps(self, ctx: LlamaContextHandle) -> Iterator[None]:
        logits = self._prefill(ctx)
        active = list(range(len(self.prompts)))
        while active:
            for row, seq in enumerate(active):
                self._accept(seq, self.sampler(logits[row], self.prompts[seq], self.tokens[seq]))
            yield
            active = [s for s in active if len(self.tokens[s]) < self.params.max_new_tokens and not self._stopped(s)]
            if not active:
                break
            ctx.fill([(self.tokens[s][-1], len(self.prompts[s]) + len(self.tokens[s]) - 1, s, True) for s in active])
            ctx.decode()
            logits = ctx.logits(len(active))

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
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings.
    Parameters are checked when the stream is made; the context is taken when iteration starts."""

    def __init__(
        self,
        prompt: list[int],
        params: GenerationConfig,
        eos: set[int],
        seed: int | None,
        *,
        open_context: OpenContext,
        detokenize: Callable[[list[int]], str],
    ) -> None:
        Decoder([prompt], params, eos, seed)  # raises now for what the backend cannot do
        self.prompt, self.params, self.eos, self.seed = prompt, params, eos, seed
        self.open_context, self.detokenize = open_context, detokenize
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        run = Decoder([self.prompt], self.params, self.eos, self.seed)
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
