"""Streaming on the calling thread: `generate`'s own preparation, then its sampling loop one token at a time.

Why not `generate(streamer=TextIteratorStreamer(...))`: that runs `generate` on a second thread, and torch
work on a second thread was measured 1.8x slower on 2 cores. So the loop runs on the caller's thread and
yields each piece as its token comes, and it is `generate` in every rule, by construction:

- `prepare` calls `model.generate` with the GenerationConfig the non-streaming path passes
  (`generate.generation_config`) and `custom_generate=<callable>`. That argument is public: `generate` does
  all its usual preparation and then calls the callable instead of its own decoding loop. The preparation
  merges the model's generation_config (forced_bos/eos_token_id, min_length, suppress_tokens,
  begin_suppress_tokens, bad_words_ids, encoder_no_repeat_ngram_size, exponential_decay_length_penalty, eos
  lists, ...), tensorizes the special tokens, derives max_length / min_length, runs the encoder, makes the KV
  cache, the attention mask and position ids, and builds the logits processors and stopping criteria with
  its `_get_logits_processor` / `_get_stopping_criteria`. The callable keeps all of it and returns, so this
  module has no list of processors that could fall behind `generate`'s. A response_format's processor
  (`constrain`) is passed as the non-streaming path passes it, so `generate` places it among its own.
- `decode_steps` is the body of `GenerationMixin._sample` (Transformers 5.24) for one sequence: the same
  forward inputs, the same processors on fp32 logits, `argmax` when greedy and `torch.multinomial` on the
  softmax when sampling (so a seed reproduces `generate`'s sample), the same stopping criteria.

Private Transformers methods it calls, the two `_sample` itself calls, so the forward passes get exactly
`generate`'s inputs (tests/integration/test_stream_parity.py pins the result on every supported family):
`model._prefill(input_ids, generation_config, model_kwargs)` (the first forward pass; chunked when the
config sets `prefill_chunk_size`) and `model._update_model_kwargs_for_generation(outputs, model_kwargs, ...)`
(carries the KV cache from one step's output into the next step's inputs and extends the attention mask and
position ids). The cache travels under the name this Transformers version uses (`cache` in 5.24, where the
deprecated `past_key_values` raises a FutureWarning on every call; `past_key_values` in 5.17), never a
deprecated one. The parity tests pass on Transformers 5.24 (CPU, fp32) and 5.17 (CUDA, bf16).

finish_reason: `stop` when the model produced an end-of-sequence token itself (or a stop string matched);
`length` when max_new_tokens / max_length ended it, including a `forced_eos_token_id` that the processors put
at max_length (a truncation, not the model's choice).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from omnirun.config import GenerationConfig, ModelType
from omnirun.engine.base import Completion
from omnirun.engine.hf.generate import constrained, eos_ids, generation_config


class TokenStream:
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings.

    The tokens are those `generate` produces for the same prompt, parameters and seed (see the module doc).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_type: ModelType,
        text: str,
        params: GenerationConfig,
        *,
        add_special_tokens: bool,
        seed: int | None,
    ) -> None:
        self.model, self.tokenizer, self.model_type = model, tokenizer, model_type
        self.text, self.params = text, params
        self.add_special_tokens, self.seed = add_special_tokens, seed
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        import torch

        tokenizer, model = self.tokenizer, self.model
        enc = tokenizer(self.text, return_tensors="pt", add_special_tokens=self.add_special_tokens).to(model.device)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        start = time.perf_counter()
        times: list[float] = []
        tokens: list[int] = []
        shown = ""
        finish = "length"
        with torch.inference_mode():
            steps = decode_steps(model, prepare(model, tokenizer, enc, self.params), eos_ids(model, tokenizer))
            for token, reason in steps:
                times.append(time.perf_counter() - start)
                tokens.append(token)
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                if text.startswith(shown) and not text.endswith("\ufffd") and len(text) > len(shown):
                    piece, shown = text[len(shown) :], text
                    yield piece
                if reason is not None:
                    finish = reason
                    break
            steps.close()
        final = tokenizer.decode(tokens, skip_special_tokens=True)
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]
        e2e = time.perf_counter() - start
        ttft = times[0] if times else None
        n_in = int(enc["attention_mask"].sum())
        self.completion = Completion(final, n_in, len(tokens), finish, e2e, ttft, times, tokens)


@dataclass
class Prepared:
    """What `generate` hands its decoding method: the start of the sequence (the prompt, or the decoder start
    token), the processors and stopping criteria, the final generation config, and the forward inputs."""

    input_ids: Any
    processors: Any
    criteria: Any
    config: Any
    model_kwargs: dict[str, Any]


def prepare(model: Any, tokenizer: Any, enc: Any, params: GenerationConfig) -> Prepared:
    """Run `generate`'s preparation for `enc` with the non-streaming path's generation config, and keep what it
    would decode with (`custom_generate` is called in place of the decoding loop; it returns at once)."""
    kept: list[Prepared] = []

    def keep(
        model: Any, input_ids: Any, logits_processor: Any, stopping_criteria: Any, generation_config: Any, **kw: Any
    ) -> Any:
        kept.append(Prepared(input_ids, logits_processor, stopping_criteria, generation_config, kw))
        return input_ids

    extra = constrained(model, tokenizer, [params.response_format], params)  # the response_format's processor
    model.generate(**enc, generation_config=generation_config(model, tokenizer, params), custom_generate=keep, **extra)
    if not kept:  # a model class with its own `generate` that ignores `custom_generate`
        raise NotImplementedError(f"{type(model).__name__} cannot stream: its generate() has no custom_generate hook")
    return kept[0]


def decode_steps(model: Any, prepared: Prepared, extra_eos: set[int]) -> Generator[tuple[int, str | None], None, None]:
    """Yield `(token id, finish reason or None)` per new token, `GenerationMixin._sample`'s loop for one sequence;
    the last one yielded carries the reason. `extra_eos` are ids that also end the sequence (the engine's
    `eos_ids`, which also cuts `generate`'s output at the tokenizer's end-of-sequence token)."""
    import torch

    input_ids, config = prepared.input_ids, prepared.config
    processors, criteria = prepared.processors, prepared.criteria
    kwargs = dict(prepared.model_kwargs)
    encoder_decoder = bool(model.config.is_encoder_decoder)
    eos = extra_eos | criteria_eos(criteria)
    forced_at = forced_eos(processors)
    out = model._prefill(input_ids, config, kwargs)
    while True:
        kwargs = model._update_model_kwargs_for_generation(out, kwargs, is_encoder_decoder=encoder_decoder)
        logits = out.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)
        del out  # as `_sample` does: the prefill's logits can be large
        scores = processors(input_ids, logits)
        if config.do_sample:
            token = torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            token = torch.argmax(scores, dim=-1)
        input_ids = torch.cat([input_ids, token[:, None]], dim=-1)
        done = bool(criteria(input_ids, None)[0])
        new = int(token)
        forced = new in forced_at.get(input_ids.shape[-1], ())
        yield new, finish_reason(new, forced, done, eos, criteria, input_ids)
        next_length = 1 if kwargs.get("use_cache", True) else None
        inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=next_length, **kwargs)
        out = model(**inputs, return_dict=True)


def finish_reason(token: int, forced: bool, done: bool, eos: set[int], criteria: Any, input_ids: Any) -> str | None:
    """`length` for a forced end-of-sequence token or a length limit, `stop` for the model's own
    end-of-sequence token or a matched stop string, None to go on."""
    if forced:
        return "length"
    if token in eos:
        return "stop"
    if not done:
        return None
    from transformers.generation import StopStringCriteria

    stopped = any(isinstance(c, StopStringCriteria) and bool(c(input_ids, None)[0]) for c in criteria)
    return "stop" if stopped else "length"


def criteria_eos(criteria: Any) -> set[int]:
    """The end-of-sequence ids `generate`'s stopping criteria stop at (its merged `eos_token_id` list)."""
    from transformers.generation import EosTokenCriteria

    found: set[int] = set()
    for c in criteria:
        if isinstance(c, EosTokenCriteria):
            found.update(int(i) for i in c.eos_token_id.flatten().tolist())
    return found


def forced_eos(processors: Any) -> dict[int, set[int]]:
    """Where `generate`'s ForcedEOSTokenLogitsProcessor forces a token: {sequence length once it is added: the
    ids allowed there}. It acts on the step that reaches max_length, where only its ids are left."""
    from transformers.generation import ForcedEOSTokenLogitsProcessor

    at: dict[int, set[int]] = {}
    for p in processors:
        if isinstance(p, ForcedEOSTokenLogitsProcessor):
            at.setdefault(int(p.max_length), set()).update(int(i) for i in p.eos_token_id.flatten().tolist())
    return at
