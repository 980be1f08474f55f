"""omnirun's generation settings as vLLM's `SamplingParams`: the same search, the same stopping rule, the same
per-record seed as the `openai` backend sends a server (so vLLM offline and a vLLM server sample alike).

Everything here builds plain keyword dictionaries; only `sampling_params` imports vllm."""

from __future__ import annotations

import json
from typing import Any

from omnirun import structured
from omnirun.config import GenerationConfig

UNSUPPORTED = (
    "hardware.backend=vllm has no beam search or no_repeat_ngram_size in its sampler (generation.num_beams={beams}, "
    "generation.no_repeat_ngram_size={ngram}); set them to 1 / 0 or use hardware.backend=transformers"
)


def problem(params: GenerationConfig) -> str | None:
    """Why vLLM's sampler cannot decode with these settings the way Transformers does, or None."""
    if params.num_beams == 1 and params.no_repeat_ngram_size == 0:
        return None
    return UNSUPPORTED.format(beams=params.num_beams, ngram=params.no_repeat_ngram_size)


def check(params: GenerationConfig) -> None:
    """ValueError (one line, naming the key and value) for settings vLLM's sampler does not have."""
    why = problem(params)
    if why is not None:
        raise ValueError(why)


def sampling_kwargs(params: GenerationConfig, seed: int | None) -> dict[str, Any]:
    """`SamplingParams(**kwargs)` for one request: greedy is temperature 0 (vLLM's argmax), sampling keeps
    Transformers' temperature / top-p / top-k; min_new_tokens suppresses end-of-sequence until then, as
    Transformers' `min_new_tokens` does. Text is detokenized without special tokens, as the other backends do."""
    check(params)
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens or 0,
        "repetition_penalty": params.repetition_penalty,
        "skip_special_tokens": True,
        "seed": seed,
    }
    if params.do_sample:
        kwargs |= {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k or -1}
    else:
        kwargs |= {"temperature": 0.0, "top_p": 1.0, "top_k": -1}
    if params.response_format is not None:
        kwargs["structured_outputs"] = structured_kwargs(params.response_format)
    return kwargs


def structured_kwargs(fmt: dict[str, Any]) -> dict[str, Any]:
    """`StructuredOutputsParams(**kwargs)` for a checked `response_format` (`omnirun.structured`): a Lark grammar
    for vLLM's `guidance` structured-output backend (llguidance, as on the other backends), with the JSON layout
    they enforce (`structured.JSON_OPTIONS`), so that a record gets the same constrained answer everywhere."""
    return {"grammar": lark(fmt)}


def lark(fmt: dict[str, Any]) -> str:
    """The Lark grammar (llguidance's dialect) for a checked `response_format`: a JSON schema or a regex."""
    schema = structured.schema_of(fmt)
    if schema is None:
        return "start: /" + str(fmt["pattern"]).replace("/", "\\/") + "/"
    return "start: %json " + json.dumps({"x-guidance": structured.JSON_OPTIONS, **schema})


def sampling_params(params: GenerationConfig, seed: int | None, *, prompt_logprobs: int | None = None) -> Any:
    """vLLM's `SamplingParams` for one request (cumulative outputs: every step returns the tokens so far)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    kwargs = sampling_kwargs(params, seed)
    if "structured_outputs" in kwargs:
        kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
    return SamplingParams(**kwargs, prompt_logprobs=prompt_logprobs, output_kind=RequestOutputKind.CUMULATIVE)
