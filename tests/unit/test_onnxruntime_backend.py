"""The onnxruntime backend's choice, refusals and helpers, without exporting a model (fast, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")

import transformers

from omnirun import hardware
from omnirun.config import Backend, Device, DType, GenerationConfig, HardwareConfig, ModelConfig, TaskName
from omnirun.engine.build import BACKENDS, build
from omnirun.engine.onnxruntime import OrtEngine, decode, export
from omnirun.engine.onnxruntime.tokenizer import FastTokenizer
from omnirun.errors import ConfigError
from omnirun.hardware import GpuInfo, HardwareInfo, ModelSize

from tiny_models import build_tiny

ORT = HardwareConfig(backend=Backend.onnxruntime, device=Device.cpu)


def machine(gpu: bool = False) -> HardwareInfo:
    gpus = (GpuInfo("Simulated GPU", 16 * 1024.0, 15 * 1024.0, True),) if gpu else ()
    return HardwareInfo("Simulated CPU", 8, 32 * 1024.0, 24 * 1024.0, gpus)


def test_registered_in_backends() -> None:
    assert BACKENDS[Backend.onnxruntime] is OrtEngine
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


def test_auto_never_takes_onnxruntime() -> None:
    """Opt-in: int4 missed the agreement target on the bundled model (benchmarks/results/cpu_paths.json)."""
    for gguf in (False, True):
        assert hardware.place(HardwareConfig(), machine(), gguf=gguf).backend != Backend.onnxruntime


def test_plan_batch_cap_and_threads() -> None:
    placement = hardware.place(ORT, machine(), gguf=False)
    plan = hardware.plan(ORT, ModelSize(params=1_000_000, num_layers=2, kv_dim=64), machine(), placement=placement)
    assert plan.backend == Backend.onnxruntime and not plan.cpu_int4_decode


def test_non_generation_tasks_are_refused_before_loading(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match="runs text generation only, not task=embed") as err:
        build(ModelConfig(name=str(tiny_llama)), ORT, task=TaskName.embed)
    assert "\n" not in str(err.value)
    engine = build(ModelConfig(name=str(tiny_llama)), ORT, task=TaskName.chat)
    assert isinstance(engine, OrtEngine)
    with pytest.raises(ConfigError, match="text generation only"):
        engine.analyze(TaskName.classify, [], None)  # type: ignore[arg-type]
    for call in (engine.save, engine.export_onnx):
        with pytest.raises(ConfigError, match="backend=transformers"):
            call("/tmp/nowhere")


def test_auto_with_a_non_generation_task_keeps_transformers(tiny_llama: Path) -> None:
    engine = build(ModelConfig(name=str(tiny_llama)), HardwareConfig(), task=TaskName.embed)
    assert not isinstance(engine, OrtEngine)


def test_unsupported_generation_settings() -> None:
    for params in (
        GenerationConfig(num_beams=2, do_sample=False),
        GenerationConfig(no_repeat_ngram_size=2),
        GenerationConfig(response_format={"type": "json_object"}),
    ):
        with pytest.raises(ValueError, match="backend=transformers"):
            decode.check_params(params)


def test_a_prompt_holding_the_padding_id_is_decoded_alone() -> None:
    assert decode.batches([[1, 2], [3]], pad=9) == [[0, 1]]
    assert decode.batches([[1, 9], [3]], pad=9) == [[0], [1]]


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
