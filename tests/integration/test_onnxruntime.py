"""The onnxruntime backend on a tiny random llama, exported for real by onnxruntime-genai's builder (seconds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime_genai")

from omnirun import structured
from omnirun.config import Backend, Device, GenerationConfig, HardwareConfig, ModelConfig, Quantization
from omnirun.engine import TransformersEngine
from omnirun.engine.build import build
from omnirun.engine.hf import optimize
from omnirun.engine.onnxruntime import OrtEngine, export
from omnirun.engine.onnxruntime import spec as ort_spec
from omnirun.errors import ConfigError

from clirun import omnirun, only_run_dir
from tiny_models import build_tiny

GREEDY = GenerationConfig(do_sample=False, max_new_tokens=12, temperature=1.0, top_p=1.0, top_k=0)
PROMPTS = ["Hello world", "What is the capital of france and the capital of germany? Once upon a time", "One two"]


def ort(path: Path, quantization: Quantization | None = None) -> OrtEngine:
    hardware = HardwareConfig(backend=Backend.onnxruntime, device=Device.cpu, quantization=quantization)
    engine = build(ModelConfig(name=str(path)), hardware)
    assert isinstance(engine, OrtEngine)
    return engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("ort-llama"), seed=3)


@pytest.fixture(scope="module")
def fp32(model_dir: Path) -> Iterator[OrtEngine]:
    engine = ort(model_dir).load_model()
    yield engine
    engine.unload_model()


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(model_dir), optimize=False).load_model()


def test_fp32_greedy_matches_transformers(fp32: OrtEngine, reference: TransformersEngine) -> None:
    ids = [reference.tokenizer(p)["input_ids"] for p in PROMPTS]
    result = optimize.agreement(reference, fp32, ids, 12)
    assert result.teacher_forced == 1.0 and result.exact == 1.0
    assert [fp32.tokenizer(p)["input_ids"] for p in PROMPTS] == ids


def test_a_batch_equals_its_prompts_one_at_a_time(fp32: OrtEngine) -> None:
    together = fp32.generate(PROMPTS, GREEDY)
    alone = [fp32.generate([p], GREEDY)[0] for p in PROMPTS]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    for c in together:
        assert c.output_tokens == len(c.token_ids) <= 12 and c.finish_reason in ("stop", "length")
        assert c.ttft_s is not None and c.e2e_s >= c.ttft_s


def test_forced_length_stream_chat_and_queries(fp32: OrtEngine) -> None:
    forced = GenerationConfig(do_sample=False, max_new_tokens=9, min_new_tokens=9)
    assert [c.output_tokens for c in fp32.generate(PROMPTS[:2], forced)] == [9, 9]
    text = fp32.generate([PROMPTS[1]], GREEDY)[0].text
    stream = fp32.stream_tokens(PROMPTS[1], GREEDY)
    assert "".join(stream) == text and stream.completion is not None and stream.completion.text == text
    assert isinstance(fp32.chat([{"role": "user", "content": "hello"}], do_sample=False, max_new_tokens=4), str)
    assert fp32.render_chat([{"role": "user", "content": "hi"}]).endswith("<|assistant|>\n")
    assert fp32.count_tokens("hello world") > 0 and fp32.max_context
    params = fp32.parameters()
    assert params is not None and params.total > 0 and params.trainable is None
    assert fp32.memory().model_footprint_mb
    assert fp32.plan is not None and fp32.plan.backend == Backend.onnxruntime and fp32.plan.quantization is None


def test_sampling_is_seeded(fp32: OrtEngine) -> None:
    params = GenerationConfig(do_sample=True, max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0)
    first = fp32.generate(PROMPTS[:2], params, seed=7)
    again = fp32.generate(PROMPTS[:2], params, seed=7)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]


def test_the_second_load_reads_the_cached_export(
    model_dir: Path, fp32: OrtEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "run_builder", no_export)
    again = ort(model_dir).load_model()
    assert again.export_path == fp32.export_path
    assert again.generate([PROMPTS[0]], GREEDY)[0].token_ids == fp32.generate([PROMPTS[0]], GREEDY)[0].token_ids


def test_int4_exports_and_generates(model_dir: Path) -> None:
    engine = ort(model_dir, Quantization.int4).load_model()
    assert engine.plan is not None and engine.plan.quantization == Quantization.int4
    assert "MatMulNBits" in (engine.plan.reasons["quantization"])
    assert engine.generate([PROMPTS[0]], GREEDY)[0].output_tokens > 0


def test_a_model_the_builder_cannot_convert_is_one_line(tmp_path: Path) -> None:
    t5 = build_tiny("t5", tmp_path / "t5")
    with pytest.raises(ConfigError, match=r"model.name=.*hardware.backend=onnxruntime.*backend=transformers") as err:
        ort(t5).load_model()
    assert "\n" not in str(err.value)


def test_the_pruned_head_reads_each_rows_last_real_token(fp32: OrtEngine) -> None:
    """The export computes logits for one position per row (`graph.fix_pruned_head`); prompts of very different
    lengths in one right-padded batch still match their single-prompt answers."""
    import onnx

    assert fp32.export_path is not None
    graph = onnx.load(str(fp32.export_path / "model.onnx"), load_external_data=False).graph
    assert any(node.op_type == "GatherElements" and "prune_rows" in node.name for node in graph.node)
    prompts = ["One", "One two three four five six seven eight nine ten eleven twelve thirteen fourteen", "Hi there"]
    together = fp32.generate(prompts, GREEDY)
    assert [c.token_ids for c in together] == [fp32.generate([p], GREEDY)[0].token_ids for p in prompts]


def test_response_formats_are_enforced(fp32: OrtEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]}
    formats: list[dict[str, Any]] = [
        {"type": "json_schema", "json_schema": {"name": "t", "schema": {**schema, "additionalProperties": False}}},
        {"type": "regex", "pattern": "(yes|no)[0-9]{2}"},
    ]
    for fmt in formats:
        params = GenerationConfig(do_sample=False, max_new_tokens=24, response_format=fmt)
        outputs = fp32.generate(PROMPTS[:2], params)
        assert all(structured.output_problem(c.text, fmt) is None for c in outputs), [c.text for c in outputs]
        stream = fp32.stream_tokens(PROMPTS[0], params)
        assert structured.output_problem("".join(stream), fmt) is None


def test_auto_runs_an_ordinary_checkpoint_through_onnxruntime(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hardware=auto` end to end: the run goes through the fp32 export, the manifest says so and why, and the
    records (per-record formats included) are answered as on Transformers. The size rule is lowered for the
    tiny model; the other rules decide."""
    monkeypatch.setattr(ort_spec, "AUTO_MIN_PARAMS", 1)
    schema = {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}}, "required": ["kind"]}
    lines = [
        {"id": "s", "prompt": "hello", "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
        {"id": "r", "prompt": "numbers", "response_format": {"type": "regex", "pattern": "[0-9]{2,4}"}},
        {"id": "f", "prompt": "free text"},
        {"id": "g", "prompt": "more free text, a little longer than the one before"},
    ]
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = (f"model.name={model_dir}", f"input.path={records}", "generation=greedy", "generation.max_new_tokens=12")
    assert omnirun(tmp_path / "ort", *args, "task.batch_size=4") == 0
    run = only_run_dir(tmp_path / "ort")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["plan"]["reasons"]["backend"].startswith("onnxruntime: an ordinary Hugging Face causal LM")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_errors"] == 0 and metrics["valid_rate"] == {"json_schema": 1.0, "regex": 1.0}
    assert omnirun(tmp_path / "hf", *args, "task.batch_size=4", "hardware.backend=transformers") == 0
    reference = only_run_dir(tmp_path / "hf")

    def outputs(folder: Path) -> dict[str, str]:
        rows = [json.loads(line) for line in (folder / "outputs.jsonl").read_text().splitlines()]
        return {row["id"]: row["output"] for row in rows}

    mine, theirs = outputs(run), outputs(reference)
    assert mine["f"] == theirs["f"] and mine["g"] == theirs["g"]  # free text: the same greedy tokens
