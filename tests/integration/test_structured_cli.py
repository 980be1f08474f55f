"""Constrained output end to end: random-weight tiny models still write JSON that parses and validates (and text
that matches a regex), batched with a format per row, greedy and sampled, streamed, on seq2seq, through the CLI
(per-record formats, a bad schema as an error row, a bad run-level format before loading), and on llama.cpp."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from omnirun import structured
from omnirun.config import GenerationConfig

from clirun import omnirun, only_run_dir

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "pet": {
            "type": "object",
            "properties": {"kind": {"enum": ["cat", "dog", "fish"]}, "legs": {"type": "integer", "maximum": 8}},
            "required": ["kind", "legs"],
            "additionalProperties": False,
        },
        "ok": {"type": "boolean"},
    },
    "required": ["name", "pet", "ok"],
    "additionalProperties": False,
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
REGEX = {"type": "regex", "pattern": "(yes|no): [a-z]{2,6}( [a-z]{2,6}){0,2}"}
PROMPTS = ["hello world", "the quick brown fox jumps over", "seven", "what is the capital of france"]
needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)


def params(fmt: dict[str, Any] | None = None, **kw: Any) -> GenerationConfig:
    config = GenerationConfig(max_new_tokens=kw.pop("max_new_tokens", 80), response_format=fmt, **kw)
    config.validate()
    return config


@pytest.fixture(scope="module")
def llama(tiny_llama: Path) -> Any:
    from omnirun.engine import TransformersEngine

    return TransformersEngine(str(tiny_llama)).load_model()


@pytest.mark.parametrize("sampling", [False, True])
def test_every_row_keeps_its_own_format(llama: Any, sampling: bool) -> None:
    from omnirun.engine.hf.generate import generate_encoded

    formats = [SCHEMA, None, REGEX, SCHEMA]
    config = params(do_sample=sampling, temperature=1.0)
    enc = llama.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    done = generate_encoded(llama.model, llama.tokenizer, llama.model_type, enc, config, 7, formats)
    for completion, fmt in zip(done, formats, strict=True):
        if fmt is not None:
            assert completion.finish_reason == "stop", completion.text
            assert structured.output_problem(completion.text, fmt) is None, completion.text
    assert structured.output_problem(done[1].text, SCHEMA) is not None  # the free row stays free
    assert json.loads(done[0].text)["pet"]["kind"] in ("cat", "dog", "fish")


def test_the_run_level_format_applies_to_the_whole_batch(llama: Any) -> None:
    for fmt in (SCHEMA, REGEX):
        done = llama.generate(PROMPTS, params(fmt, do_sample=False))
        assert structured.valid_rate([(fmt, c.text) for c in done]) == {fmt["type"]: 1.0}
    for c in llama.generate(PROMPTS, params({"type": "json_object"}, do_sample=True, temperature=1.0), seed=3):
        assert c.text.startswith("{")  # any object may run past max_new_tokens; a finished one parses
        assert c.finish_reason == "length" or isinstance(json.loads(c.text), dict)


def test_the_stream_is_constrained_like_generate(llama: Any) -> None:
    for fmt, sampling in ((SCHEMA, False), (REGEX, True)):
        config = params(fmt, do_sample=sampling, temperature=1.0)
        stream = llama.stream_tokens(PROMPTS[1], config, seed=5)
        text = "".join(stream)
        assert stream.completion is not None and stream.completion.text == text
        assert structured.output_problem(text, fmt) is None, text
        (batch,) = llama.generate([PROMPTS[1]], config, seed=5)
        assert batch.token_ids == stream.completion.token_ids


def test_beam_search_is_refused(llama: Any) -> None:
    with pytest.raises(ValueError, match="num_beams=1"):
        llama.generate(PROMPTS[:1], params(SCHEMA, do_sample=False, num_beams=2))


def test_seq2seq(tiny_t5: Path) -> None:
    from omnirun.engine import TransformersEngine

    engine = TransformersEngine(str(tiny_t5)).load_model()
    done = engine.generate(PROMPTS, params(SCHEMA, do_sample=False))
    assert all(structured.output_problem(c.text, SCHEMA) is None for c in done), [c.text for c in done]


def test_cli_per_record_formats_and_a_bad_schema(tmp_path: Path, tiny_llama: Path) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "nope"}}}
    lines = [
        {"id": "person", "prompt": "hello world", "response_format": SCHEMA},
        {"id": "broken", "prompt": "hello world", "response_format": bad},
        {"id": "free", "prompt": "seven small models"},
        {"custom_id": "openai", "url": "/v1/completions", "body": {"prompt": "hi", "response_format": REGEX}},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    root = tmp_path / "out"
    code = omnirun(root, f"model.name={tiny_llama}", f"input.path={path}", "generation=greedy", "task.batch_size=4")
    assert code == 0
    rows = {r["id"]: r for r in map(json.loads, (only_run_dir(root) / "outputs.jsonl").read_text().splitlines())}
    assert structured.output_problem(rows["person"]["output"], SCHEMA) is None
    assert structured.output_problem(rows["openai"]["output"], REGEX) is None
    assert rows["free"]["error"] is None
    error = rows["broken"]["error"]
    assert rows["broken"]["output"] is None and "response_format" in error and "'nope'" in error


def test_cli_a_run_level_format_that_cannot_compile_exits_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "out"
    fmt = "generation.response_format={type: regex, pattern: '(?=a)b'}"
    code = omnirun(root, "model.name=/no/such/model", fmt, "input.prompt=hi")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "look-around" in err and "generation.response_format" in err
    assert not root.exists() or not any(root.rglob("config.yaml"))


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_batches_streams_and_caches() -> None:
    from omnirun.config import HardwareConfig, ModelConfig
    from omnirun.engine.llamacpp import LlamaCppEngine
    from omnirun.engine.llamacpp.decode import _GRAMMARS, Decoder

    engine = LlamaCppEngine(ModelConfig(), HardwareConfig()).load_model()
    try:
        chats = [engine.render_chat([{"role": "user", "content": f"Describe pet {i} as JSON."}]) for i in range(3)]
        done = engine.generate(chats, params(SCHEMA, do_sample=False, max_new_tokens=60))
        assert all(structured.output_problem(c.text, SCHEMA) is None for c in done), [c.text for c in done]
        sampled = engine.generate(chats, params(REGEX, do_sample=True, temperature=0.8), seed=1)
        assert structured.valid_rate([(REGEX, c.text) for c in sampled]) == {"regex": 1.0}
        stream = engine.stream_tokens(chats[0], params(SCHEMA, do_sample=False, max_new_tokens=60))
        assert "".join(stream) == done[0].text
        (grammars,) = _GRAMMARS.values()
        assert len(next(iter(grammars.values())).compiled) == 2  # each format compiled once
        assert engine.tokenizer is not None
        early = Decoder([[1]], params(SCHEMA), engine.tokenizer.eos_ids, 0, vocab_model=engine._model)
        assert early.constraints is not None and early.constraints.live() == [0]  # compiled when made
    finally:
        engine.unload_model()
