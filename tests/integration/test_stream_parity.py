"""`engine.stream` is `generate`: the same tokens, text and finish_reason for every architecture family the
engine supports, greedy and sampled with a seed, under every rule a model's generation_config can carry.

Tiny random models (hidden 64, 2 layers, the 400-token in-process tokenizer), built once per module. The
stream runs `generate`'s own preparation and `_sample`'s loop (see omnirun/engine/hf/stream.py); these tests
pin that, including the private Transformers methods it relies on, on the installed Transformers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from omnirun.engine import Completion, TransformersEngine

from tiny_models import FAMILIES, build_family

PROMPT = "What is the capital of france and the capital of germany? Once upon a time"
N = 12
GREEDY: dict[str, Any] = {"do_sample": False, "max_new_tokens": N}
SAMPLE: dict[str, Any] = {"do_sample": True, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "max_new_tokens": N}
HOT: dict[str, Any] = {"do_sample": True, "temperature": 2.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": N}

# facebook/bart-large-cnn's generation_config.json. Its ids are bart's (<s>=0, </s>=2); the tiny tokenizer's
# 0 is <pad> and 2 is </s>, both special tokens, so the forced tokens decode to "" as they do there.
# min_length (56) is above max_new_tokens: end-of-sequence stays suppressed until the forced one at max_length.
# num_beams is 4 there; the engine passes its own num_beams (1 here), as for no_repeat_ngram_size and
# length_penalty, so the comparison is greedy.
BART_LARGE_CNN: dict[str, Any] = {
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "min_length": 56,
    "max_length": 142,
    "no_repeat_ngram_size": 3,
    "length_penalty": 2.0,
    "num_beams": 4,
    "early_stopping": True,
}
FAMILY_GENERATION: dict[str, dict[str, Any]] = {"bart": BART_LARGE_CNN}


MakeEngine = Callable[..., TransformersEngine]

# bart-large-cnn's min_length (56) above max_length: Transformers warns, in both paths, and it is the point
pytestmark = pytest.mark.filterwarnings("ignore:Unfeasible length constraints:UserWarning")


@pytest.fixture(scope="module")
def make_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeEngine]:
    """`make(family, **generation)`: a loaded engine on a tiny `family` model whose saved generation_config
    has `generation` set; each distinct model is built and loaded once per module."""
    engines: dict[str, TransformersEngine] = {}

    def make(family: str, **generation: Any) -> TransformersEngine:
        key = f"{family} {sorted(generation.items())!r}"
        if key not in engines:
            path = build_family(family, tmp_path_factory.mktemp(family), generation=generation)
            engines[key] = TransformersEngine(str(path)).load_model()
        return engines[key]

    yield make
    engines.clear()  # ~50 tiny models: unload_model()'s gc + malloc_trim each would add seconds for nothing


def check_parity(engine: TransformersEngine, seed: int | None = None, **gen: Any) -> Completion:
    """Stream and generate `PROMPT` with the same params and seed; assert the same text (also through the
    convenience API: `stream` vs `infer`), token ids and finish_reason; return the stream's completion.

    A `forced_eos_token_id` of the model's at max_length is a truncation: both say `length`.
    """
    assert "".join(engine.stream(PROMPT, seed=seed, **gen)) == engine.infer(PROMPT, seed=seed, **gen)
    params = engine.params(**gen)
    stream = engine.stream_tokens(PROMPT, params, seed=seed)
    pieces = list(stream)
    streamed, generated = stream.completion, engine.generate([PROMPT], params, seed=seed)[0]
    assert streamed is not None
    assert streamed.token_ids == generated.token_ids
    assert "".join(pieces) == streamed.text == generated.text
    assert streamed.output_tokens == generated.output_tokens == len(generated.token_ids)
    assert streamed.finish_reason == generated.finish_reason
    return streamed


def greedy_ids(engine: TransformersEngine) -> list[int]:
    return engine.generate([PROMPT], engine.params(**GREEDY))[0].token_ids


# ------------------------------------------------------------------------------------------- every family
@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_stream_equals_generate(family: str, make_engine: MakeEngine) -> None:
    engine = make_engine(family, **FAMILY_GENERATION.get(family, {}))
    streamed = check_parity(engine, **GREEDY)
    assert streamed.output_tokens > 1  # something to compare, not an immediate end-of-sequence


def test_bart_large_cnn_rules_apply(make_engine: MakeEngine) -> None:
    """forced BOS first, min_length holding off end-of-sequence, forced EOS last, in exactly max_new_tokens."""
    assert greedy_ids(make_engine("bart")) == [2]  # left alone, the random model ends at once
    streamed = check_parity(make_engine("bart", **BART_LARGE_CNN), **GREEDY)
    ids = streamed.token_ids
    assert ids[0] == 0 and ids[-1] == 2 and 2 not in ids[:-1] and len(ids) == N
    assert streamed.finish_reason == "length"


@pytest.mark.parametrize(
    "gen",
    [
        {"no_repeat_ngram_size": 3},
        {"repetition_penalty": 1.3, "min_new_tokens": 5},
        {"no_repeat_ngram_size": 2, "max_new_tokens": 20},
    ],
    ids=["no-repeat-3", "repetition-min-new", "no-repeat-2-long"],
)
def test_bart_large_cnn_with_call_params(gen: dict[str, Any], make_engine: MakeEngine) -> None:
    check_parity(make_engine("bart", **BART_LARGE_CNN), **{**GREEDY, **gen})


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3", "t5", "bart"])
def test_sampled_stream_equals_generate_with_the_same_seed(family: str, make_engine: MakeEngine) -> None:
    engine = make_engine(family, **FAMILY_GENERATION.get(family, {}))
    for gen in (SAMPLE, HOT):
        for seed in (0, 1, 2):
            check_parity(engine, seed=seed, **gen)
    samples = {tuple(engine.generate([PROMPT], engine.params(**HOT), seed=seed)[0].token_ids) for seed in range(4)}
    assert len(samples) > 1  # the seed matters: this is sampling, not greedy


# ------------------------------------------------------------------------------ generation_config rules
def rules(base: list[int], start: int, seq2seq: bool) -> dict[str, dict[str, Any]]:
    """Rules for the model's generation_config, aimed at the tokens the model picks without them (`base`);
    `start` is the length of the sequence before the first new token (min_length counts it)."""
    first, second, third = base[0], base[1], base[2]
    found: dict[str, dict[str, Any]] = {
        "suppress": {"suppress_tokens": [second, third], "begin_suppress_tokens": [first]},
        "bad-words": {"bad_words_ids": [[first], [second, third]]},
        "eos-list": {"eos_token_id": [2, third]},
        "eos-list-min-length": {"eos_token_id": [2, second], "min_length": start + 6},
        # min_length 0: with end-of-sequence at -inf the penalty is nan before Transformers 5.24 (both paths)
        "exponential-decay": {"eos_token_id": [2, 5], "exponential_decay_length_penalty": (2, 1.5), "min_length": 0},
        "sequence-bias": {"sequence_bias": [[[second], -50.0], [[first, 7], 20.0]]},
        "forced-eos": {"forced_eos_token_id": 2},
        "max-length": {"max_length": 5},  # max_new_tokens (always passed) wins, in both paths
        "renormalize-remove-invalid": {"renormalize_logits": True, "remove_invalid_values": True},
    }
    if seq2seq:
        found["encoder-no-repeat"] = {"encoder_no_repeat_ngram_size": 2}
        found["forced-bos"] = {"forced_bos_token_id": 7}
    return found


RULE_CASES = [
    (family, rule)
    for family, seq2seq in (("gpt2", False), ("llama", False), ("t5", True), ("bart", True))
    for rule in rules([0, 0, 0], 0, seq2seq)
]


@pytest.mark.parametrize(("family", "rule"), RULE_CASES, ids=[f"{f}-{r}" for f, r in RULE_CASES])
def test_generation_config_rules(family: str, rule: str, make_engine: MakeEngine) -> None:
    family_generation = FAMILY_GENERATION.get(family, {})
    skip = 1 if "forced_bos_token_id" in family_generation else 0  # aim past bart-large-cnn's forced first token
    base = greedy_ids(make_engine(family, **family_generation))[skip:]
    seq2seq = FAMILIES[family][2]
    start = 1 if seq2seq else make_engine(family).count_tokens(PROMPT)
    engine = make_engine(family, **{**family_generation, **rules(base, start, seq2seq)[rule]})
    ids = check_parity(engine, **GREEDY).token_ids[skip:]
    check_parity(engine, seed=3, **SAMPLE)
    if rule == "suppress":
        assert ids != base and ids[0] != base[0] and base[1] not in ids and base[2] not in ids
    if rule == "eos-list" and base[2] not in base[:2]:
        assert ids == base[:3]  # ended by the extra end-of-sequence id, as `stop`
        assert check_parity(engine, **GREEDY).finish_reason == "stop"


def test_stop_strings_fail_alike(make_engine: MakeEngine) -> None:
    """`generate` needs the tokenizer for stop strings and the engine does not pass it: both paths refuse."""
    engine = make_engine("gpt2", stop_strings=["time"])
    with pytest.raises(ValueError, match="stop strings"):
        engine.infer(PROMPT, **GREEDY)
    with pytest.raises(ValueError, match="stop strings"):
        list(engine.stream(PROMPT, **GREEDY))


# ----------------------------------------------------------------------------------------- finish_reason
def test_forced_eos_is_a_length_finish_in_the_stream(make_engine: MakeEngine) -> None:
    engine = make_engine("gpt2", forced_eos_token_id=2)
    stream = engine.stream_tokens(PROMPT, engine.params(**GREEDY))
    "".join(stream)
    assert stream.completion is not None
    assert stream.completion.token_ids[-1] == 2 and stream.completion.output_tokens == N
    assert stream.completion.finish_reason == "length"


def test_forced_eos_is_a_length_finish_in_generate(make_engine: MakeEngine) -> None:
    engine = make_engine("bart", **BART_LARGE_CNN)
    assert engine.generate([PROMPT], engine.params(**GREEDY))[0].finish_reason == "length"


# ------------------------------------------------------------------------------------------------ the loop
def test_stream_runs_on_the_calling_thread_and_yields_early(make_engine: MakeEngine) -> None:
    engine = make_engine("llama")
    threads = threading.active_count()
    stream = engine.stream_tokens(PROMPT, engine.params(**GREEDY))
    iterator = iter(stream)
    first = next(iterator)
    assert first and stream.completion is None  # a piece before the end
    assert threading.active_count() == threads
    rest = list(iterator)
    assert stream.completion is not None and first + "".join(rest) == stream.completion.text
