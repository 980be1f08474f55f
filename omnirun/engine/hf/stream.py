"""Streaming on the calling thread: a decode loop with the logits processors `generate` uses.

The loop runs on the calling thread (no generate thread, no TextIteratorStreamer): torch work on a second
thread was measured 1.8x slower on 2 cores.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Generator, Iterator
from typing import Any

from omnirun.config import GenerationConfig, ModelType
from omnirun.engine.base import Completion
from omnirun.engine.hf.generate import eos_ids


class TokenStream:
    """Iterate to get text pieces as tokens are produced; afterwards `completion` holds counts and timings.

    The loop is the plain decode loop (prefill once, then one token at a time through the KV cache) with the
    same logits processors `generate` uses, so greedy output equals `generate`'s.
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

        params, tokenizer, model = self.params, self.tokenizer, self.model
        enc = tokenizer(self.text, return_tensors="pt", add_special_tokens=self.add_special_tokens).to(model.device)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        eos = eos_ids(model, tokenizer)
        start_len = 1 if self.model_type == ModelType.seq2seq else enc["input_ids"].shape[1]  # decode_steps' history
        processors = logits_processors(params, start_len, sorted(eos), model.device)
        start = time.perf_counter()
        times: list[float] = []
        tokens: list[int] = []
        shown = ""
        finish = "length"
        with torch.inference_mode():
            steps = decode_steps(model, self.model_type, enc, processors, params.do_sample)
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


def decode_steps(
    model: Any, model_type: ModelType, enc: Any, processors: Any, sample: bool
) -> Generator[int, None, None]:
    """Yield new token ids forever (the caller stops): prefill, then one cached forward pass per token."""
    import torch

    input_ids, mask = enc["input_ids"], enc["attention_mask"]
    forward = inspect.signature(model.forward).parameters
    cache_name = cache_keyword(forward)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
    if model_type == ModelType.seq2seq:
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
        cache = {cache_name: getattr(out, cache_name)}
        if model_type == ModelType.seq2seq:
            out = model(
                encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=token, use_cache=True, **cache
            )
        else:
            mask = torch.cat([mask, mask.new_ones((1, 1))], dim=-1)
            out = model(input_ids=token, attention_mask=mask, use_cache=True, **cache, **extra)


def cache_keyword(forward_params: Any) -> str:
    """The name under which this Transformers version passes the KV cache in and out of `forward`: `cache`
    where `forward` declares it (Transformers 5.24 does, and there `past_key_values` raises a FutureWarning on
    every call), else `past_key_values`. The same name reads it back from the output, as `generate` does."""
    return "cache" if "cache" in forward_params else "past_key_values"


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
