"""Structured output without a model: checking formats (compile errors before loading), checking outputs against
them, valid_rate, the per-row matchers and masks, and the mask in both backends' samplers."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from omnirun import structured
from omnirun.config import GenerationConfig
from omnirun.engine.llamacpp.decode import Decoder, Sampler
from omnirun.errors import ConfigError

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "pet"],
    "additionalProperties": False,
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
REGEX = {"type": "regex", "pattern": "(yes|no)"}
JSON_OBJECT = {"type": "json_object"}


def test_formats_are_normalized() -> None:
    assert structured.check_response_format(None) is None
    assert structured.check_response_format({"type": "text"}) is None
    assert structured.check_response_format("{type: json_object}") == JSON_OBJECT
    assert structured.check_response_format(SCHEMA) == SCHEMA
    assert structured.check_response_format(REGEX) == REGEX


def test_config_containers_become_plain_json_values() -> None:
    from omegaconf import OmegaConf

    fmt = structured.check_response_format(OmegaConf.create(SCHEMA))
    assert fmt == SCHEMA and type(fmt["json_schema"]["schema"]["required"]) is list


@pytest.mark.parametrize(
    ("fmt", "words"),
    [
        ({"type": "regex", "pattern": "(?=a)b"}, ["pattern '(?=a)b'", "look-around", "rewrite it"]),
        ({"type": "regex", "pattern": r"(a)\1"}, ["back-references", "rewrite it"]),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}, ["not a valid JSON schema"]),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}},
            ["cannot be enforced", "/$defs/missing", "simplify the schema"],
        ),
    ],
)
def test_a_format_that_cannot_compile_is_a_config_error(fmt: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        structured.check_response_format(fmt, "generation.response_format")
    message = str(info.value)
    assert message.startswith("generation.response_format: ") and "\n" not in message
    for word in words:
        assert word in message


def test_a_record_override_with_a_bad_format_fails_validation() -> None:
    with pytest.raises(ConfigError, match="response_format"):
        GenerationConfig().with_overrides({"response_format": {"type": "regex", "pattern": "(?<=x)y"}}, prefix="")


def test_canonical_keeps_property_order() -> None:
    a = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {"b": {}, "a": {}}}}}
    b = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {"a": {}, "b": {}}}}}
    assert structured.canonical(a) != structured.canonical(b)
    assert structured.canonical(a) == structured.canonical(dict(a))


@pytest.mark.parametrize(
    ("text", "fmt", "valid"),
    [
        ("anything at all", None, True),
        ('{"a": [1, 2]}', JSON_OBJECT, True),
        ("[1, 2]", JSON_OBJECT, False),
        ('{"a": ', JSON_OBJECT, False),
        ('{"name": "Rex", "pet": {"kind": "dog"}, "age": 3}', SCHEMA, True),
        ('{"name": "Rex", "pet": {"kind": "cow"}}', SCHEMA, False),
        ('{"name": "Rex"}', SCHEMA, False),
        ('{"name": "Rex", "pet": {"kind": "cat"}, "extra": 1}', SCHEMA, False),
        ('{"name": "Rex", "pet": {"kind": "cat"}, "age": 121}', SCHEMA, False),
        ("yes", REGEX, True),
        ("yes!", REGEX, False),
        ("no", REGEX, True),
    ],
)
def test_output_problem(text: str, fmt: dict[str, Any] | None, valid: bool) -> None:
    assert structured.is_valid(text, fmt) is valid
    assert (structured.output_problem(text, fmt) is None) is valid


def test_the_basic_check_without_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # `import jsonschema` now raises ImportError
    good = {"name": "Rex", "pet": {"kind": "dog"}, "age": 3}
    assert structured.instance_problem(good, PERSON) is None
    cases = {
        "is not of type": {**good, "age": "3"},
        "is not one of": {**good, "pet": {"kind": "cow"}},
        "required property": {"name": "Rex"},
        "additional property": {**good, "x": 1},
        "above maximum": {**good, "age": 200},
        "above maxLength": {**good, "name": "a" * 9},
    }
    for words, value in cases.items():
        problem = structured.instance_problem(value, PERSON)
        assert problem is not None and words in problem, (value, problem)
    assert structured.basic_problem(True, {"type": "integer"}) is not None  # a boolean is not an integer
    assert structured.basic_problem([1, "x"], {"type": "array", "items": {"type": "integer"}}) is not None
    assert structured.basic_problem("abc", {"type": "string", "pattern": "^a"}) is None


def test_valid_rate_per_format_type() -> None:
    pairs: list[tuple[Mapping[str, Any] | None, str | None]] = [
        (SCHEMA, '{"name": "Rex", "pet": {"kind": "dog"}}'),
        (SCHEMA, '{"name": "Rex"}'),
        (REGEX, "yes"),
        (JSON_OBJECT, None),  # an error row: not counted
        (None, "free text"),  # not counted
    ]
    assert structured.valid_counts(pairs) == {"json_schema": (1, 2), "regex": (1, 1)}
    assert structured.valid_rate(pairs) == {"json_schema": 0.5, "regex": 1.0}
    assert structured.valid_rate([(None, "x")]) == {}


@pytest.fixture(scope="module")
def grammars() -> structured.Grammars:
    """Grammars over the tiny in-process tokenizer (pad=0, bos=1, eos=2, unk=3)."""
    import llguidance.hf

    from tiny_models import build_tokenizer

    tokenizer = build_tokenizer()
    return structured.Grammars(llguidance.hf.from_tokenizer(tokenizer, eos_token=[2]), [2])


def test_each_format_compiles_once(grammars: structured.Grammars) -> None:
    rows = grammars.rows([REGEX, None, dict(REGEX), SCHEMA])
    assert [m is None for m in rows.matchers] == [False, True, False, False]
    assert (structured.canonical(REGEX), None) in grammars.compiled
    assert len(grammars.compiled) == 2  # the regex once, the schema once
    assert rows.live() == [0, 2, 3]


def test_masks_follow_each_row(grammars: structured.Grammars) -> None:
    rows = grammars.rows([REGEX, SCHEMA])
    width = int(grammars.tokenizer.vocab_size) + 5  # logits wider than the vocabulary: the extra ids never
    masks = rows.masks([0, 1], width)
    assert masks.shape == (2, width) and masks.dtype == bool and not masks[:, -5:].any()
    decode = grammars.tokenizer.decode_str
    assert all("yes".startswith(decode([t])) or "no".startswith(decode([t])) for t in np.flatnonzero(masks[0]))
    assert all('{"name": '.startswith(decode([t])) for t in np.flatnonzero(masks[1]))
    for token in grammars.tokenizer.tokenize_str("yes"):
        rows.advance(0, token)
    (eos_only,) = rows.masks([0], width)
    assert np.flatnonzero(eos_only).tolist() == [2]  # the regex is complete: only the end-of-sequence token
    rows.advance(0, 2)
    assert rows.live() == [1]
    bad = next(t for t in range(width) if not masks[1][t])
    rows.advance(1, bad)  # a token the grammar refused: the row gives up rather than crash
    assert rows.live() == [] and 1 in rows.problems


def test_a_format_the_tokenizer_cannot_compile_is_a_format_error(grammars: structured.Grammars) -> None:
    with pytest.raises(structured.FormatError, match="regex cannot be compiled"):
        grammars.matcher({"type": "regex", "pattern": "(?=a)b"})


def test_the_llama_cpp_sampler_takes_only_allowed_tokens() -> None:
    logits = np.arange(8, dtype=np.float32)  # token 7 is the most likely
    allowed = np.zeros(8, dtype=bool)
    allowed[[2, 4]] = True
    greedy = GenerationConfig(do_sample=False)
    assert Sampler(greedy, {0}, 0)(logits, [1], [], allowed) == 4
    sampling = GenerationConfig(do_sample=True, temperature=1.0, top_k=1, top_p=0.5)
    assert {Sampler(sampling, {0}, seed)(logits, [1], [], allowed) for seed in range(5)} == {4}
    # min_new_tokens forbids the end-of-sequence token a finished format needs: the format wins
    only_eos = np.zeros(8, dtype=bool)
    only_eos[0] = True
    early = GenerationConfig(do_sample=False, min_new_tokens=5, max_new_tokens=10)
    assert Sampler(early, {0}, 0)(logits, [1], [], only_eos) == 0


def test_the_decoder_takes_one_format_per_prompt() -> None:
    params = GenerationConfig(response_format=REGEX)
    params.validate()
    assert Decoder([[1], [2]], params, {0}, 0).formats == [REGEX, REGEX]
    assert Decoder([[1], [2]], params, {0}, 0, formats=[None, SCHEMA]).formats == [None, SCHEMA]
    with pytest.raises(ValueError, match="1 response formats for 2 prompts"):
        Decoder([[1], [2]], params, {0}, 0, formats=[None])


def test_the_transformers_processor_masks_only_constrained_rows(grammars: structured.Grammars) -> None:
    import torch

    from omnirun.engine.hf.constrain import GrammarProcessor

    rows = grammars.rows([REGEX, None])
    width = int(grammars.tokenizer.vocab_size)
    processor = GrammarProcessor(rows)
    scores = torch.zeros(2, width)
    out = processor(torch.tensor([[5], [5]]), scores)
    allowed = torch.isfinite(out[0])
    assert 0 < int(allowed.sum()) < width and bool(torch.isfinite(out[1]).all())
    assert torch.equal(allowed, torch.from_numpy(grammars.rows([REGEX]).masks([0], width)[0]))
    yes = grammars.tokenizer.tokenize_str("yes")
    step = processor(torch.tensor([[5, yes[0]], [5, 9]]), torch.zeros(2, width))
    assert bool(torch.isfinite(step[0]).any()) and rows.live() == [0]


@pytest.mark.parametrize("pattern", [r"[^\s\S]", r"a[^\s\S]", r".{200}[^\s\S]", r"(ab|cd){1,3}[^\s\S]"])
def test_a_pattern_no_text_matches_is_refused_before_anything_runs(pattern: str) -> None:
    """It used to generate "" with finish_reason stop: now a search with llguidance's matcher finds no text."""
    with pytest.raises(ConfigError, match="can never be matched"):
        structured.check_response_format({"type": "regex", "pattern": pattern})


@pytest.mark.parametrize("pattern", [r"a{0}", r"(\xff[^\s\S])|a", r"\w+ \w+ \w+", r"[a-z]{3,}@x\.com"])
def test_a_pattern_some_text_matches_is_accepted(pattern: str) -> None:
    assert structured.check_response_format({"type": "regex", "pattern": pattern}) is not None
