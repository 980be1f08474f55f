"""Generation on an onnxruntime-genai model: a batch of token-id prompts decoded together, a stream, and the
teacher-forced greedy choices used for agreement checks.

onnxruntime-genai runs the search (greedy, or sampling with temperature / top-k / top-p, repetition penalty and
a minimum length) in its own kernels; a batch is right-padded with the export's padding id, which the model
masks out. A `response_format` is enforced by onnxruntime-genai's guidance (llguidance, the library the other
backends compile formats with, and the same JSON layout options: `structured.JSON_OPTIONS`). Each sequence's
tokens are cut at its first end-of-sequence token or at max_new_tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from omnirun import structured
from omnirun.config import GenerationConfig
from omnirun.engine.base import Completion

UNSUPPORTED = "the onnxruntime backend has no beam search or no_repeat_ngram_size; use hardware.backend=transformers"


class Decoder:
    """One generation over a batch of token-id prompts. `steps()` yields once per step, after every unfinished
    sequence got its next token; `tokens` and `finish` hold the results."""

    def __init__(
        self,
        model: Any,
        prompts: list[list[int]],
        params: GenerationConfig,
        *,
        eos: set[int],
        pad: int,
        vocab: int,
        seed: int | None,
    ) -> None:
        check_params(params)
        if any(not p for p in prompts):
            raise ValueError("empty prompt: the onnxruntime backend needs at least one prompt token")
        self.model, self.prompts, self.params = model, prompts, params
        self.eos, self.pad, self.vocab, self.seed = eos, pad, vocab, seed
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.finish = ["length"] * len(prompts)

    def _generator(self) -> Any:
        import numpy as np
        import onnxruntime_genai as og

        longest = max(len(p) for p in self.prompts)
        p = self.params
        options: dict[str, Any] = {
            "batch_size": len(self.prompts),
            "max_length": longest + p.max_new_tokens,
            "do_sample": p.do_sample,
            "repetition_penalty": p.repetition_penalty,
        }
        if p.min_new_tokens:
            options["min_length"] = longest + p.min_new_tokens
        if p.do_sample:
            options |= {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k or self.vocab}
        if self.seed is not None:
            options["random_seed"] = int(self.seed)
        search = og.GeneratorParams(self.model)
        search.set_search_options(**options)
        if p.response_format is None:
            generator = og.Generator(self.model, search)
        else:
            search.set_guidance(*guidance(p.response_format))
            try:
                generator = og.Generator(self.model, search)
            except RuntimeError as exc:  # the guidance could not compile the format
                raise ValueError(f"generation.response_format: {str(exc).splitlines()[0][:200]}") from None
        batch = np.full((len(self.prompts), longest), self.pad, dtype=np.int32)
        for row, prompt in enumerate(self.prompts):
            batch[row, : len(prompt)] = prompt
        generator.append_tokens(batch)
        return generator

    def steps(self) -> Iterator[None]:
        generator = self._generator()
        active = list(range(len(self.prompts)))
        while active and not generator.is_done():
            generator.generate_next_token()
            chosen = generator.get_next_tokens()
            for seq in active:
                token = int(chosen[seq])
                self.tokens[seq].append(token)
                if token in self.eos:
                    self.finish[seq] = "stop"
            yield
            active = [
                s for s in active if self.finish[s] != "stop" and len(self.tokens[s]) < self.params.max_new_tokens
            ]


def check_params(params: GenerationConfig) -> None:
    """ValueError (one line) for what onnxruntime-genai's search cannot do the way Transformers does."""
    if not supports(params):
        raise ValueError(UNSUPPORTED)


def supports(params: GenerationConfig) -> bool:
    """Whether onnxruntime-genai's search decodes with these settings the way Transformers does."""
    return params.num_beams == 1 and params.no_repeat_ngram_size == 0


def guidance(fmt: dict[str, Any]) -> tuple[str, str]:
    """onnxruntime-genai's guidance type and data for a checked response_format (`structured`)."""
    schema = structured.schema_of(fmt)
    if schema is None:
        return "regex", str(fmt["pattern"])
    return "json_schema", json.dumps({**schema, "x-guidance": structured.JSON_OPTIONS})


MAX_BATCH = 32
"""The most sequences onnxruntime-genai's generator takes at once on the CPU."""


def batches(prompts: list[list[int]], pad: int) -> list[list[int]]:
    """Index groups decoded together: up to `MAX_BATCH` prompts at a time, unless one contains the padding id
    (then one at a time)."""
    if any(pad in p for p in prompts):
        return [[i] for i in range(len(prompts))]
    return [list(range(i, min(i + MAX_BATCH, len(prompts)))) for i in range(0, len(prompts), MAX_BATCH)]


def run(
    model: Any,
    prompts: list[list[int]],
    params: GenerationConfig,
    *,
    eos: set[int],
    pad: int,
    vocab: int,
    seed: int | None,
    detokenize: Callable[[list[int]], str],
) -> list[Completion]:
    """Complete `prompts` (decoded together, see `batches`), in input order."""
    out: dict[int, Completion] = {}
    for group in batches(prompts, pad):
        chunk = [prompts[i] for i in group]
        run = Decoder(model, chunk, params, eos=eos, pad=pad, vocab=vocab, seed=seed)
        start = time.perf_counter()
        times: list[float] = []
        for _ in run.steps():
            times.append(time.perf_counter() - start)
        e2e = time.perf_counter() - start
        ttft = times[0] if times else None
        for i, prompt, tokens, finish in zip(group, chunk, run.tokens, run.finish, strict=True):
            text = detokenize(tokens)
            out[i] = Completion(text, len(prompt), len(tokens), finish, e2e, ttft, times[: len(tokens)], tokens)
    return [out[i] for i in range(len(prompts))]


class OrtStream:
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings.
    Parameters are checked when the stream is made; decoding starts when iteration does."""

    def __init__(
        self,
        model: Any,
        prompt: list[int],
        params: GenerationConfig,
        *,
        eos: set[int],
        pad: int,
        vocab: int,
        seed: int | None,
        detokenize: Callable[[list[int]], str],
    ) -> None:
        self.decoder = Decoder(model, [prompt], params, eos=eos, pad=pad, vocab=vocab, seed=seed)
        self.prompt, self.detokenize = prompt, detokenize
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        run = self.decoder
        tokens = run.tokens[0]
        start = time.perf_counter()
        times: list[float] = []
        shown = ""
        for _ in run.steps():
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


def argmax_next(model: Any, ids: list[int]) -> list[int]:
    """The greedy next token after every prefix of `ids`: one token appended per step (teacher forcing)."""
    import numpy as np
    import onnxruntime_genai as og

    search = og.GeneratorParams(model)
    search.set_search_options(max_length=len(ids) + 1, batch_size=1)
    generator = og.Generator(model, search)
    out: list[int] = []
    for token in ids:
        generator.append_tokens(np.array([[token]], dtype=np.int32))
        out.append(int(generator.get_logits()[0, -1].argmax()))
    return out
