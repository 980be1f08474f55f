"""The fast paths: backend choice, exact int4 decoding copies, the agreement check, the llama.cpp engine and a
smoke run of benchmarks/compare.py. No timings here: speed lives in the benchmark."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from omnirun.config import Backend, Device, GenerationConfig, HardwareConfig, ModelConfig, TaskName
from omnirun.engine import TransformersEngine
from omnirun.engine.build import build
from omnirun.engine.hf import HfEngine, optimize
from omnirun.engine.llamacpp import LlamaCppEngine
from omnirun.errors import ConfigError
from omnirun.hardware import GpuInfo, HardwareInfo

from samples import snap_to_grid

ROOT = Path(__file__).resolve().parents[2]


HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")


GREEDY = GenerationConfig(do_sample=False, max_new_tokens=12, temperature=1.0, top_p=1.0, top_k=0)


def machine(llama_cpp: bool = True, gpu: bool = False, int4: bool = True) -> HardwareInfo:
    gpus = (GpuInfo("Simulated GPU", 16 * 1024.0, 15 * 1024.0, True),) if gpu else ()
    return HardwareInfo("Simulated CPU", 8, 32 * 1024.0, 24 * 1024.0, gpus, llama_cpp=llama_cpp, int4_kernels=int4)


@pytest.fixture(scope="module")
def tiny_on_grid(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with every Linear weight moved onto a 4-bit grid, like a dequantized Q4_1 GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama-grid")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                module.weight.copy_(snap_to_grid(module.weight))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(folder)
    return folder


def test_engine_adds_int4_copies_where_exact(tiny_on_grid: Path, tiny_llama: Path) -> None:
    with TransformersEngine(str(tiny_on_grid)) as engine:
        assert engine.plan is not None and engine.plan.cpu_int4_decode
        assert "of" in engine.plan.reasons["cpu_int4_decode"]
        # every Linear but the output head: 2 layers x 7 projections; the head gets a bf16 decoding copy
        assert optimize.int4_decode_layers(engine.model) == 14
        head = engine.model.get_output_embeddings()
        assert isinstance(head, optimize.Bf16DecodeLinear) and head.weight.dtype == torch.float32
        assert engine.infer("hello world", do_sample=False, max_new_tokens=5)
    with TransformersEngine(str(tiny_llama)) as engine:  # random weights: nothing is exact, nothing changes
        assert engine.plan is not None and not engine.plan.cpu_int4_decode
        assert optimize.int4_decode_layers(engine.model) == 0
        assert type(engine.model.get_output_embeddings()) is torch.nn.Linear


def test_saved_model_leaves_the_decoding_copies_out(tiny_on_grid: Path, tmp_path: Path) -> None:
    """The int4 / bf16 decoding copies are buffers of the running model, not of the checkpoint: a save writes the
    plain weights (and an ONNX export traces the plain Linear layers)."""
    from safetensors import safe_open

    with TransformersEngine(str(tiny_on_grid)) as engine:
        assert optimize.int4_decode_layers(engine.model) == 14
        saved = engine.save(tmp_path / "saved")
        ids = engine.tokenizer("hello world")["input_ids"]
        expected = engine.argmax_next(ids)
        assert optimize.int4_decode_layers(engine.model) == 14  # still decoding from the copies
    with (
        safe_open(str(saved.path / "model.safetensors"), "pt") as f,
        safe_open(str(tiny_on_grid / "model.safetensors"), "pt") as original,
    ):
        assert set(f.keys()) == set(original.keys())
    with TransformersEngine(str(saved.path), optimize=False) as again:
        assert again.argmax_next(ids) == expected


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the onnx extra is not installed")
def test_onnx_export_with_decoding_copies(tiny_on_grid: Path, tmp_path: Path) -> None:
    with TransformersEngine(str(tiny_on_grid)) as engine:
        exported = engine.export_onnx(tmp_path / "onnx")
        assert optimize.int4_decode_layers(engine.model) == 14
    assert exported.max_abs_diff is None or exported.max_abs_diff < 1e-4


@pytest.mark.parametrize("kwargs", [{"optimize": False}, {"auto_config": False}])
def test_plain_fp32_when_asked(tiny_on_grid: Path, kwargs: dict[str, Any]) -> None:
    with TransformersEngine(str(tiny_on_grid), **kwargs) as engine:
        assert engine.plan is not None and not engine.plan.cpu_int4_decode
        assert optimize.int4_decode_layers(engine.model) == 0
        assert engine.plan.dtype == "float32"


def test_agreement_runs_and_is_a_share(tiny_on_grid: Path) -> None:
    reference = TransformersEngine(str(tiny_on_grid), optimize=False).load_model()
    candidate = TransformersEngine(str(tiny_on_grid)).load_model()
    prompts = [reference.tokenizer(t)["input_ids"] for t in ("hello world", "the capital of france is", "one two")]
    same = optimize.agreement(reference, reference, prompts, 8)
    assert (same.teacher_forced, same.prefix, same.exact, same.divergence_margin) == (1.0, 1.0, 1.0, None)
    result = optimize.agreement(reference, candidate, prompts, 8)
    assert result.prompts == 3 and result.positions > 0
    for share in (result.teacher_forced, result.prefix, result.exact):
        assert 0.0 <= share <= 1.0
    assert result.divergence_margin is None or result.divergence_margin > -1e-4  # the reference picked its argmax


def test_completions_carry_their_token_ids(tiny_llama: Path) -> None:
    with TransformersEngine(str(tiny_llama)) as engine:
        out = engine.generate(["hello world"], GREEDY)[0]
        assert len(out.token_ids) == out.output_tokens
        stream = engine.stream_tokens("hello world", GREEDY)
        "".join(stream)
        assert stream.completion is not None and stream.completion.token_ids == out.token_ids


def test_build_keeps_transformers_for_a_folder(tiny_llama: Path) -> None:
    engine = build(ModelConfig(name=str(tiny_llama)), HardwareConfig())
    assert isinstance(engine, HfEngine)
    with engine:
        assert engine.plan is not None
        # a tiny folder: under the size for which auto exports to onnxruntime (or onnxruntime is not installed)
        why = engine.plan.reasons["backend"]
        assert why.startswith("transformers: ") and "onnxruntime not used (" in why


def test_build_honours_an_explicit_transformers_backend(tiny_llama: Path) -> None:
    hw = HardwareConfig(backend=Backend.transformers, optimize=False)
    with build(ModelConfig(name=str(tiny_llama)), hw) as engine:
        assert engine.plan is not None and engine.plan.reasons["backend"] == "transformers as requested"


def test_build_rejects_llama_cpp_for_a_folder(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match="llama.cpp"):
        build(ModelConfig(name=str(tiny_llama)), HardwareConfig(backend=Backend.llama_cpp))


def test_build_places_once_and_the_plan_keeps_that_device(tiny_llama: Path) -> None:
    """The device is resolved in build() (hardware.place); the plan takes device and reasons from there."""
    generation = GenerationConfig(max_new_tokens=3)
    engine = build(
        ModelConfig(name=str(tiny_llama)), HardwareConfig(), generation=generation, info=machine(), batch_size=2
    )
    assert isinstance(engine, HfEngine)
    assert engine.placement is not None
    assert (engine.placement.device, engine.placement.backend) == (Device.cpu, Backend.transformers)
    assert engine.default_generation is generation and engine.batch_size == 2
    with engine:
        assert engine.plan is not None
        assert engine.plan.device == engine.placement.device
        assert engine.plan.reasons["device"] == engine.placement.device_reason
        assert engine.plan.reasons["backend"] == engine.placement.backend_reason


@pytest.fixture(scope="module")
def llama_engine() -> Iterator[LlamaCppEngine]:
    engine = build(ModelConfig(), HardwareConfig())
    assert isinstance(engine, LlamaCppEngine)
    engine.load_model()
    yield engine
    engine.unload_model()


@needs_llama_cpp
def test_llama_cpp_engine_generates_and_records_why(llama_engine: LlamaCppEngine) -> None:
    assert llama_engine.plan is not None and llama_engine.plan.backend == "llama.cpp"
    assert "llama-cpp-python is installed" in llama_engine.plan.reasons["backend"]
    assert llama_engine.model_type == "causal-lm"
    assert llama_engine.max_context and llama_engine.max_context >= 2048
    answer = llama_engine.chat([{"role": "user", "content": "What is the capital of France?"}], do_sample=False)
    assert answer.strip()
    memory = llama_engine.memory()
    assert memory.model_footprint_mb and memory.model_footprint_mb > 10


@needs_llama_cpp
def test_llama_cpp_forced_lengths_batches_and_streams(llama_engine: LlamaCppEngine) -> None:
    params = GenerationConfig(do_sample=False, max_new_tokens=6, min_new_tokens=6)
    texts = ["Once upon a time", "The capital of Germany is", "1, 2, 3,"]
    batch = llama_engine.generate(texts, params)
    assert [c.output_tokens for c in batch] == [6, 6, 6]
    assert all(len(c.token_times_s) == 6 and c.ttft_s is not None for c in batch)
    assert [c.input_tokens for c in batch] == [llama_engine.count_tokens(t) for t in texts]
    single = llama_engine.generate([texts[0]], params)[0]
    stream = llama_engine.stream_tokens(texts[0], params)
    assert "".join(stream) == single.text
    assert stream.completion is not None and stream.completion.token_ids == single.token_ids


@needs_llama_cpp
def test_llama_cpp_sampling_is_seeded_and_stops(llama_engine: LlamaCppEngine) -> None:
    a = llama_engine.infer("Tell me a joke.", max_new_tokens=10, seed=3)
    assert a == llama_engine.infer("Tell me a joke.", max_new_tokens=10, seed=3)
    out = llama_engine.generate(["Say hi."], GenerationConfig(do_sample=False, max_new_tokens=200))[0]
    assert out.finish_reason in ("stop", "length") and out.output_tokens <= 200
    with pytest.raises(ValueError, match="beam search"):
        llama_engine.generate(["Hi"], GenerationConfig(do_sample=False, num_beams=2))


@needs_llama_cpp
def test_llama_cpp_tokenizer_adapter(llama_engine: LlamaCppEngine) -> None:
    tok = llama_engine.tokenizer
    assert tok is not None
    assert len(tok) == 49152
    assert tok("Hello world")["input_ids"] == tok.encode("Hello world")
    assert 2 in tok.all_special_ids and 2 in tok.eos_ids
    assert llama_engine.has_chat_template()
    text = llama_engine.render_chat([{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>assistant\n")


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_chat_template_and_tokens_match_transformers(
    llama_engine: LlamaCppEngine, smollm2_engine: TransformersEngine
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three rivers."}]
    text = smollm2_engine.render_chat(messages)
    assert llama_engine.render_chat(messages) == text
    assert llama_engine.tokenizer is not None
    assert (
        llama_engine.tokenizer.encode(text, False)
        == smollm2_engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    )


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_stays_close_to_fp32(llama_engine: LlamaCppEngine, smollm2_engine: TransformersEngine) -> None:
    """The quality gate for making llama.cpp the auto choice: teacher-forced greedy agreement with fp32
    Transformers (bf16 scores ~0.97 on this measure), and paths that part only at near-ties."""
    topics = ("photosynthesis", "gravity", "the water cycle", "compound interest")
    prompts = [
        smollm2_engine.tokenizer(smollm2_engine.render_chat([{"role": "user", "content": f"Explain {t}."}]))[
            "input_ids"
        ]
        for t in topics
    ]
    result = optimize.agreement(smollm2_engine, llama_engine, prompts, 16)
    assert result.teacher_forced >= 0.9, result
    assert result.divergence_margin is None or result.divergence_margin < 1.0, result


@needs_llama_cpp
def test_llama_cpp_parameters_and_tasks(llama_engine: LlamaCppEngine) -> None:
    count = llama_engine.parameters()
    assert count is not None and 130e6 < count.total < 140e6 and count.trainable is None
    llama_engine.check_task(TaskName.generate)
    with pytest.raises(ConfigError, match="hardware.backend=transformers"):
        llama_engine.check_task(TaskName.export)
    assert not hasattr(llama_engine, "save")  # a text generator only (its spec declares no export)


@pytest.mark.slow
def test_build_for_export_takes_transformers_for_a_gguf() -> None:
    """llama.cpp only generates: `auto` leaves it for task=export, and an explicit llama.cpp is refused."""
    engine = build(ModelConfig(), HardwareConfig(), info=machine(), task=TaskName.export)
    assert isinstance(engine, HfEngine) and engine.placement is not None
    assert "task=export" in engine.placement.backend_reason
    generator = build(ModelConfig(), HardwareConfig(), info=machine(), task=TaskName.generate)
    assert isinstance(generator, LlamaCppEngine) and generator.placement is not None
    assert generator.placement.backend == "llama.cpp"
    with pytest.raises(ConfigError, match="text generation only"):
        build(ModelConfig(), HardwareConfig(backend=Backend.llama_cpp), info=machine(), task=TaskName.export)


@pytest.mark.slow
def test_cli_batch_task_keeps_transformers(tmp_path: Path) -> None:
    """task=batch under `hardware.backend=auto` runs Transformers, batch size planned up to 64 on the CPU."""
    from clirun import omnirun

    assert omnirun(tmp_path, "task=batch", "generation.max_new_tokens=2", "input.prompt=Hi") == 0
    (manifest,) = tmp_path.rglob("manifest.json")
    plan = json.loads(manifest.read_text())["plan"]
    assert plan["backend"] == "transformers"
    assert ("batched run" if HAS_LLAMA_CPP else "not installed") in plan["reasons"]["backend"]


@pytest.mark.slow
def test_cli_default_backend_is_recorded(tmp_path: Path) -> None:
    """`hardware.backend=auto` (the default) on the bundled GGUF: llama.cpp when installed, else Transformers,
    with the reason in the manifest."""
    from clirun import omnirun

    assert omnirun(tmp_path, "generation.max_new_tokens=4", "generation=greedy") == 0
    (manifest,) = tmp_path.rglob("manifest.json")
    plan = json.loads(manifest.read_text())["plan"]
    assert plan["backend"] == ("llama.cpp" if HAS_LLAMA_CPP else "transformers")
    reason = plan["reasons"]["backend"]
    assert ("llama-cpp-python is installed" in reason) if HAS_LLAMA_CPP else ("not installed" in reason)


@pytest.mark.slow
def test_compare_harness_smoke(tiny_llama: Path, tmp_path: Path) -> None:
    """benchmarks/compare.py end to end in quick mode on the tiny model: baseline and omnirun-hf, the quality
    check, one table and the JSON (about 20 s: three child processes)."""
    out = tmp_path / "compare.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick", "--skip-cli"]
    cmd += ["--only", "transformers", "omnirun-hf", "--model-dir", str(tiny_llama), "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| decode tok/s, bs=1 |" in result.stdout
    report = json.loads(out.read_text())
    assert set(report["medians"]) == {"transformers", "omnirun-hf"}
    assert report["ratios_vs_baseline"]["transformers"]["decode_tok_s"] == 1.0
    assert report["machine"]["cpu"] and report["machine"]["torch"]
    assert 0.0 <= report["quality"]["omnirun-hf"]["teacher_forced"] <= 1.0
    assert out.with_suffix(".md").read_text().startswith("## omnirun vs plain Transformers")
