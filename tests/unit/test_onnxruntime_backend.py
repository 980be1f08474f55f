"""The onnxruntime backend's choice, refusals and helpers, without exporting a model (fast, offline)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

pytest.importorskip("onnxruntime_genai")

import transformers

from omnirun import hardware, plugins
from omnirun.config import (
    Backend,
    Device,
    DType,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    Quantization,
    TaskName,
)
from omnirun.engine import source
from omnirun.engine.build import build
from omnirun.engine.hf import HfEngine
from omnirun.engine.onnxruntime import OrtEngine, decode, export
from omnirun.engine.onnxruntime.tokenizer import FastTokenizer
from omnirun.errors import ConfigError
from omnirun.hardware import ExportCandidate, GpuInfo, HardwareInfo, ModelSize

from tiny_models import build_tiny

ORT = HardwareConfig(backend=Backend.onnxruntime, device=Device.cpu)


def machine(gpu: bool = False) -> HardwareInfo:
    gpus = (GpuInfo("Simulated GPU", 16 * 1024.0, 15 * 1024.0, True),) if gpu else ()
    return HardwareInfo("Simulated CPU", 8, 32 * 1024.0, 24 * 1024.0, gpus)


def test_registered_in_backends() -> None:
    assert plugins.backend(Backend.onnxruntime).factory is OrtEngine
    assert Backend("onnxruntime") == Backend.onnxruntime


def test_explicit_onnxruntime_is_chosen_on_the_cpu() -> None:
    placement = hardware.place(ORT, machine(), gguf=False)
    assert (placement.backend, placement.backend_reason) == (Backend.onnxruntime, "onnxruntime as requested")
    assert hardware.place(ORT, machine(), gguf=True).backend == Backend.onnxruntime  # through the dense copy


@pytest.mark.parametrize(
    ("request_", "gpu", "why"),
    [
        (HardwareConfig(backend=Backend.onnxruntime, device=Device.cuda), True, "device is cuda"),
        (HardwareConfig(backend=Backend.onnxruntime, dtype=DType.bfloat16), False, "dtype=bfloat16"),
        (HardwareConfig(backend=Backend.onnxruntime, device_map="auto"), False, "device_map"),
    ],
)
def test_explicit_onnxruntime_refusals_are_one_line(request_: HardwareConfig, gpu: bool, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        hardware.place(request_, machine(gpu=gpu), gguf=False)
    assert "\n" not in str(err.value) and "backend=transformers" in str(err.value)


SMOL = ExportCandidate("LlamaForCausalLM", 135_000_000, 100 * 2**30)


def auto(request: HardwareConfig, candidate: ExportCandidate | None, gpu: bool) -> str:
    placement = hardware.place(request, machine(gpu=gpu), gguf=False, candidate=candidate)
    return placement.backend_reason if placement.backend == Backend.transformers else str(placement.backend)


def test_auto_takes_the_fp32_export_for_an_ordinary_causal_lm_on_the_cpu() -> None:
    placement = hardware.place(HardwareConfig(), machine(), gguf=False, candidate=SMOL)
    assert placement.backend == Backend.onnxruntime
    assert "agreement 1.000" in placement.backend_reason and "cpu_paths" in placement.backend_reason
    plan = hardware.plan(HardwareConfig(), ModelSize(params=SMOL.params or 0), machine(), placement=placement)
    assert plan.backend == Backend.onnxruntime and plan.quantization is None


@pytest.mark.parametrize(
    ("request_", "candidate", "gpu", "why"),
    [
        (HardwareConfig(), replace(SMOL, params=1_000_000), False, "1000000 parameters, under the 50,000,000"),
        (HardwareConfig(), replace(SMOL, params=None), False, "an unknown number of parameters"),
        (HardwareConfig(), replace(SMOL, architecture="T5ForConditionalGeneration"), False, "T5ForCondit"),
        (HardwareConfig(), replace(SMOL, architecture=None), False, "architecture None"),
        (HardwareConfig(), replace(SMOL, free_disk_bytes=100 * 2**20), False, "GiB of disk, 0.1 GiB free"),
        (HardwareConfig(dtype=DType.float32), SMOL, False, "hardware.dtype set explicitly"),
        (HardwareConfig(quantization=Quantization.int8), SMOL, False, "hardware.quantization set explicitly"),
        (HardwareConfig(optimize=False), SMOL, False, "automatic optimizations are off"),
        (HardwareConfig(), SMOL, True, "device is cuda"),
        (HardwareConfig(device_map="auto"), SMOL, False, "device_map"),
    ],
)
def test_auto_keeps_transformers_and_says_why(
    request_: HardwareConfig, candidate: ExportCandidate, gpu: bool, why: str
) -> None:
    reason = auto(request_, candidate, gpu=gpu)
    assert reason.startswith("transformers: ") and "onnxruntime not used (" in reason and why in reason, reason


def test_auto_never_exports_a_gguf_file() -> None:
    placement = hardware.place(HardwareConfig(), machine(), gguf=True, candidate=SMOL)
    assert placement.backend != Backend.onnxruntime


def test_the_candidate_is_read_from_the_folder(tiny_llama: Path, tmp_path: Path) -> None:
    found = export.candidate(source.resolve(str(tiny_llama), None))
    assert found is not None and found.architecture == "LlamaForCausalLM"
    assert found.params == export.count_params(tiny_llama) > 0 and found.free_disk_bytes > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("not json")
    unreadable = export.candidate(source.resolve(str(empty), None))
    assert unreadable is not None and (unreadable.architecture, unreadable.params) == (None, None)
    written: object
    for written in ({"model_type": "llama"}, {"architectures": None}, {"architectures": []}, ["a list"]):
        (empty / "config.json").write_text(json.dumps(written))  # AutoConfig.save_pretrained lists none
        found = export.candidate(source.resolve(str(empty), None))
        assert found is not None and found.architecture is None


def test_auto_build_keeps_transformers_for_beam_search(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is tiny, so the size rule is lowered to let the other rules decide."""
    from omnirun.engine.onnxruntime import spec

    monkeypatch.setattr(spec, "AUTO_MIN_PARAMS", 1)
    model = ModelConfig(name=str(tiny_llama))
    cpu = HardwareConfig(device=Device.cpu)
    assert isinstance(build(model, cpu, generation=GenerationConfig()), OrtEngine)
    engine = build(model, cpu, generation=GenerationConfig(num_beams=2, do_sample=False))
    assert not isinstance(engine, OrtEngine)
    placement = cast(HfEngine, engine).placement
    assert placement is not None
    assert "onnxruntime not used (the onnxruntime backend has no beam search" in placement.backend_reason


def test_plan_batch_cap_and_threads() -> None:
    placement = hardware.place(ORT, machine(), gguf=False)
    plan = hardware.plan(ORT, ModelSize(params=1_000_000, num_layers=2, kv_dim=64), machine(), placement=placement)
    assert plan.backend == Backend.onnxruntime and not plan.cpu_int4_decode
    assert plan.batch_size == 32  # onnxruntime-genai's generator takes no more


def test_non_generation_tasks_are_refused_before_loading(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match="runs text generation only, not task=embed") as err:
        build(ModelConfig(name=str(tiny_llama)), ORT, task=TaskName.embed)
    assert "\n" not in str(err.value)
    engine = build(ModelConfig(name=str(tiny_llama)), ORT, task=TaskName.chat)
    assert isinstance(engine, OrtEngine)
    for method in ("analyze", "save", "export_onnx", "push_to_hub"):  # a text generator only: no refusing stubs
        assert not hasattr(engine, method)
    with pytest.raises(ConfigError, match=r"runs text generation only, not task=export.*here: transformers"):
        build(ModelConfig(name=str(tiny_llama)), ORT, task=TaskName.export)


def test_auto_with_a_non_generation_task_keeps_transformers(tiny_llama: Path) -> None:
    engine = build(ModelConfig(name=str(tiny_llama)), HardwareConfig(), task=TaskName.embed)
    assert not isinstance(engine, OrtEngine)


def test_unsupported_generation_settings() -> None:
    for params in (
        GenerationConfig(num_beams=2, do_sample=False),
        GenerationConfig(no_repeat_ngram_size=2),
    ):
        with pytest.raises(ValueError, match="backend=transformers"):
            decode.check_params(params)


def test_response_formats_become_guidance() -> None:
    assert decode.guidance({"type": "regex", "pattern": "[0-9]+"}) == ("regex", "[0-9]+")
    kind, data = decode.guidance({"type": "json_object"})
    assert kind == "json_schema" and json.loads(data)["type"] == "object"
    assert json.loads(data)["x-guidance"]["whitespace_flexible"] is False


def test_a_prompt_holding_the_padding_id_is_decoded_alone() -> None:
    assert decode.batches([[1, 2], [3]], pad=9) == [[0, 1]]
    assert decode.batches([[1, 9], [3]], pad=9) == [[0], [1]]
    groups = decode.batches([[1]] * 70, pad=9)
    assert [len(g) for g in groups] == [32, 32, 6] and [i for g in groups for i in g] == list(range(70))


def test_builder_error_is_the_last_error_line() -> None:
    out = "Reading model\nTraceback (most recent call last):\n  x\nNotImplementedError: The T5 model is not supported\n"
    assert export.builder_error(out) == "NotImplementedError: The T5 model is not supported"
    assert export.builder_error("") == "no output"


def test_the_export_key_follows_the_content(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    first = export.export_dir(folder, "int4")
    assert first != export.export_dir(folder, "fp32")
    assert export.genai_version() in first.name
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert export.export_dir(folder, "int4") != first


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("tok-llama"))


def test_fast_tokenizer_matches_transformers(chat_tokenizer: Path) -> None:
    mine = FastTokenizer(chat_tokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(chat_tokenizer)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital?"}]
    text = mine.apply_chat_template(messages)
    assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for sample in (text, "Hello world", " héllo  wörld\n\n 12", ""):
        for special in (True, False):
            assert (
                mine(sample, add_special_tokens=special)["input_ids"]
                == theirs(sample, add_special_tokens=special)["input_ids"]
            )
    ids = mine.encode("the quick brown fox")
    assert mine.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert sorted(mine.all_special_ids) == sorted(theirs.all_special_ids)
    assert len(mine) == len(theirs)
