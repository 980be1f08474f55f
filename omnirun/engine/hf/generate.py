"""Batched generation through `model.generate`: the generation config, the per-step timer, the logits processor
that enforces each row's response_format (`constrain`), and the trimming of each generated row into a
`Completion`."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from omnirun.config import GenerationConfig, ModelType
from omnirun.engine.base import Completion
from omnirun.engine.hf import constrain
from omnirun.engine.hf.loading import synchronize


def generate_encoded(
    model: Any,
    tokenizer: Any,
    model_type: ModelType,
    enc: Any,
    params: GenerationConfig,
    seed: int | None,
    formats: Sequence[dict[str, Any] | None] | None = None,
) -> list[Completion]:
    """One `model.generate` call over an encoded batch; one Completion per row, in order. `formats` gives each
    row its own response_format (None: every row takes `params.response_format`)."""
    import torch

    enc = enc.to(model.device)
    input_tokens = enc["attention_mask"].sum(dim=1).tolist()
    rows = len(input_tokens)
    formats = [params.response_format] * rows if formats is None else list(formats)
    if len(formats) != rows:
        raise ValueError(f"{len(formats)} response formats for a batch of {rows} prompts")
    extra = constrained(model, tokenizer, formats, params)
    if seed is not None:
        torch.manual_seed(seed)
    timer = StepTimer() if params.num_beams == 1 else None
    start = time.perf_counter()
    with torch.inference_mode():
        config = generation_config(model, tokenizer, params)
        out = model.generate(**enc, generation_config=config, streamer=timer, **extra)
    synchronize(model.device.type)
    e2e = time.perf_counter() - start
    new = out[:, enc["input_ids"].shape[1] :] if model_type == ModelType.causal_lm else out[:, 1:]
    steps = [t - start for t in timer.token_times] if timer else []
    ttft = steps[0] if steps else None
    eos, pad = eos_ids(model, tokenizer), tokenizer.pad_token_id
    forced = forced_eos_ids(model)
    completions = []
    for row, n_in in zip(new.tolist(), input_tokens, strict=True):
        tokens, finish = trim(row, params.max_new_tokens, eos, pad, forced)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        completions.append(Completion(text, int(n_in), len(tokens), finish, e2e, ttft, steps[: len(tokens)], tokens))
    return completions


def constrained(
    model: Any, tokenizer: Any, formats: Sequence[dict[str, Any] | None], params: GenerationConfig
) -> dict[str, Any]:
    """`generate`'s keyword arguments that enforce `formats` (one per row): a `logits_processor`, or nothing."""
    found = constrain.processors(model, tokenizer, formats, params, eos_ids(model, tokenizer))
    if not found:
        return {}
    from transformers import LogitsProcessorList

    return {"logits_processor": LogitsProcessorList(found)}


def generation_config(model: Any, tokenizer: Any, params: GenerationConfig) -> Any:
    """The model's own generation config with `params` applied (sampling knobs unset when greedy)."""
    config = copy.deepcopy(model.generation_config)
    sampling = params.do_sample
    config.update(
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
        pad_token_id=tokenizer.pad_token_id,
    )
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a sequence: the generation config's and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def forced_eos_ids(model: Any) -> set[int]:
    """The model's `forced_eos_token_id`s: what `generate` places at the last position (BART-style models)."""
    forced = model.generation_config.forced_eos_token_id
    return set(forced if isinstance(forced, list) else [] if forced is None else [forced])


def trim(
    row: list[int], max_new: int, eos: set[int], pad: int | None, forced: frozenset[int] | set[int] = frozenset()
) -> tuple[list[int], str]:
    """Cut a generated row at its first end-of-sequence token (kept) and drop padding after it. The finish is
    `stop` when the model ended the answer, `length` when the length limit did (a forced end-of-sequence token
    at the last position is the limit's doing, as the stream reports it too)."""
    for i, token in enumerate(row):
        if token in eos:
            truncated = i + 1 == max_new and token in forced
            return row[: i + 1], "length" if truncated else "stop"
    while row and pad is not None and row[-1] == pad and len(row) < max_new:
        row = row[:-1]
    return row, "length"


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
