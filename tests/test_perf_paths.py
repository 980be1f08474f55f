"""The fast paths: backend choice, exact int4 decoding copies, the agreement check, the llama.cpp engine and a
smoke run of benchmarks/compare.py. No timings here: speed lives in the benchmark."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from omnirun import hardware
from omnirun.config import Backend, Device, DType, GenerationConfig, HardwareConfig, ModelConfig, Quantization
from omnirun.engine import TransformersEngine
from omnirun.engine.build import BACKENDS, build
from omnirun.engine.hf import HfEngine, optimize
from omnirun.errors import ConfigError
from omnirun.hardware import GpuInfo, HardwareInfo, ModelSize, Placement

ROOT = Path(__file__).resolve().parent.parent
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=12, temperature=1.0, top_p=1.0, top_k=0)
TINY = ModelSize(params=1_000_000, num_layers=2, kv_dim=64)


def machine(llama_cpp: bool = True, gpu: bool = False, int4: bool = True) -> HardwareInfo:
    gpus = (GpuInfo("Simulated GPU", 16 * 1024.0, 15 * 1024.0, True),) if gpu else ()
    return HardwareInfo("Simulated CPU", 8, 32 * 1024.0, 24 * 1024.0, gpus, llama_cpp=llama_cpp, int4_kernels=int4)


def choose(
    backend: str, request: HardwareConfig, hw: HardwareInfo, *, gguf: bool, optimize: bool = True, batched: bool = False
) -> tuple[str, str]:
    """The backend `hardware.place` picks for `request` with this `backend` and `optimize`, and why."""
    asked = replace(request, backend=backend, optimize=optimize)
    placement = hardware.place(asked, hw, gguf=gguf, batched=batched)
    return placement.backend, placement.backend_reason


# ------------------------------------------------------------------------------------------------ the planner
def test_auto_takes_llama_cpp_for_a_gguf_on_the_cpu() -> None:
    backend, reason = choose("auto", HardwareConfig(), machine(), gguf=True)
    assert backend == "llama.cpp"
    assert "GGUF" in reason


@pytest.mark.parametrize(
    ("request_", "hw", "gguf", "optimize", "why"),
    [
        (HardwareConfig(), machine(), False, True, "not a GGUF"),
        (HardwareConfig(), machine(llama_cpp=False), True, True, "not installed"),
        (HardwareConfig(), machine(), True, False, "optimizations are off"),
        (HardwareConfig(), machine(gpu=True), True, True, "device is cuda"),
        (HardwareConfig(dtype=DType.bfloat16), machine(), True, True, "dtype"),
        (HardwareConfig(quantization=Quantization.int8), machine(), True, True, "quantization"),
    ],
)
def test_auto_keeps_transformers_and_says_why(
    request_: HardwareConfig, hw: HardwareInfo, gguf: bool, optimize: bool, why: str
) -> None:
    backend, reason = choose("auto", request_, hw, gguf=gguf, optimize=optimize)
    assert backend == "transformers"
    assert why in reason


def test_auto_keeps_transformers_for_batched_runs() -> None:
    backend, reason = choose("auto", HardwareConfig(), machine(), gguf=True, batched=True)
    assert backend == "transformers" and "batched run" in reason
    explicit = choose("llama.cpp", HardwareConfig(), machine(), gguf=True, batched=True)
    assert explicit[0] == "llama.cpp"


def test_explicit_backends() -> None:
    assert choose("transformers", HardwareConfig(), machine(), gguf=True)[0] == "transformers"
    assert choose("llama.cpp", HardwareConfig(), machine(), gguf=True)[0] == "llama.cpp"
    with pytest.raises(ConfigError, match="not installed"):
        choose("llama.cpp", HardwareConfig(), machine(llama_cpp=False), gguf=True)
    with pytest.raises(ConfigError, match="not a GGUF"):
        choose("llama.cpp", HardwareConfig(), machine(), gguf=False)
    with pytest.raises(ConfigError, match="backend must be one of"):
        choose("vllm", HardwareConfig(), machine(), gguf=True)


def test_plan_records_the_backend_and_the_int4_decision() -> None:
    because = Placement(Device.cpu, "cpu", Backend.transformers, "transformers: because")
    p = hardware.plan(HardwareConfig(), TINY, machine(), placement=because)
    assert p.backend == "transformers"
    assert p.reasons["backend"] == "transformers: because"
    assert p.cpu_int4_decode
    assert p.reasons["cpu_int4_decode"].startswith("on:")
    assert (p.dtype, p.quantization) == ("float32", None)


@pytest.mark.parametrize(
    ("request_", "kwargs", "why"),
    [
        (HardwareConfig(optimize=False), {}, "optimizations are off"),
        (HardwareConfig(), {"auto": False}, "optimizations are off"),
        (HardwareConfig(dtype=DType.float32), {}, "dtype"),
        (HardwareConfig(device=Device.cpu, device_map="auto"), {}, "device_map"),
    ],
)
def test_int4_decode_off_and_why(request_: HardwareConfig, kwargs: dict[str, bool], why: str) -> None:
    p = hardware.plan(request_, TINY, machine(), **kwargs)
    assert not p.cpu_int4_decode
    assert why in p.reasons["cpu_int4_decode"]


def test_int4_decode_needs_the_kernel_and_the_cpu() -> None:
    assert "no CPU int4" in hardware.plan(HardwareConfig(), TINY, machine(int4=False)).reasons["cpu_int4_decode"]
    gpu_plan = hardware.plan(HardwareConfig(), TINY, machine(gpu=True))
    assert not gpu_plan.cpu_int4_decode
    assert "cpu_int4_decode" not in gpu_plan.reasons


def test_llama_cpp_plan() -> None:
    placement = Placement(Device.cpu, "cpu", Backend.llama_cpp, "x")
    p = hardware.plan(HardwareConfig(), TINY, machine(), placement=placement)
    assert (p.backend, p.reasons["backend"], p.batch_size) == ("llama.cpp", "x", 16)
    assert not p.cpu_int4_decode and "cpu_int4_decode" not in p.reasons
    assert "GGUF" in p.reasons["dtype"]


# ------------------------------------------------------------------------------------------ exact int4 copies
def snap_to_grid(weight: torch.Tensor, group: int = optimize.GROUP) -> torch.Tensor:
    """Round a weight onto 16 levels per group between the group's min and max (what Q4_1 dequantizes to)."""
    rows, cols = weight.shape
    w = weight.reshape(rows, cols // group, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    return (torch.round((w - low) / scale) * scale + low).reshape(rows, cols)


def test_int4_grid_is_exact_or_none() -> None:
    torch.manual_seed(0)
    random = torch.randn(64, 96)
    assert optimize.int4_grid(random) is None
    assert optimize.int4_grid(torch.randn(8, 40)) is None  # 40 columns: not a whole number of groups
    snapped = snap_to_grid(random)
    grid = optimize.int4_grid(snapped)
    assert grid is not None
    codes, scale, low = grid
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15
    rebuilt = (codes.reshape(64, 3, 32) * scale[..., None] + low[..., None]).reshape(64, 96)
    torch.testing.assert_close(rebuilt, snapped, rtol=0, atol=1e-6)


def test_int4_decode_linear_matches_fp32() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=True)
    linear.weight.data = snap_to_grid(linear.weight.data)
    layer = optimize.Int4DecodeLinear(linear, *optimize.int4_grid(linear.weight))
    with torch.inference_mode():
        for rows in (1, 3, 4):  # the int4 copy, bf16 activations: close to fp32
            x = torch.randn(1, rows, 64)
            torch.testing.assert_close(layer(x), linear(x), rtol=0.02, atol=0.05)
        x = torch.randn(2, 8, 64)  # more rows: the fp32 weight itself
        torch.testing.assert_close(layer(x), linear(x), rtol=0, atol=0)


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


def test_bf16_decode_head_keeps_the_fp32_weight_for_prefill() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 300, bias=False)
    head = optimize.Bf16DecodeLinear(linear)
    assert head.weight is linear.weight  # a tied embedding stays tied
    with torch.inference_mode():
        x = torch.randn(1, 1, 64)
        torch.testing.assert_close(head(x), linear(x), rtol=0.02, atol=0.05)
        assert not torch.equal(head(x), linear(x))  # decoding really used the bf16 copy
        x = torch.randn(1, 9, 64)
        torch.testing.assert_close(head(x), linear(x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs", [{"optimize": False}, {"auto_config": False}])
def test_plain_fp32_when_asked(tiny_on_grid: Path, kwargs: dict[str, bool]) -> None:
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


def test_common_prefix() -> None:
    assert optimize.common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert optimize.common_prefix([], [1]) == 0


def test_completions_carry_their_token_ids(tiny_llama: Path) -> None:
    with TransformersEngine(str(tiny_llama)) as engine:
        out = engine.generate(["hello world"], GREEDY)[0]
        assert len(out.token_ids) == out.output_tokens
        stream = engine.stream_tokens("hello world", GREEDY)
        "".join(stream)
        assert stream.completion is not None and stream.completion.token_ids == out.token_ids


# ----------------------------------------------------------------------------------------------------- build()
def test_build_keeps_transformers_for_a_folder(tiny_llama: Path) -> None:
    engine = build(ModelConfig(name=str(tiny_llama)), HardwareConfig())
    assert isinstance(engine, HfEngine)
    with engine:
        assert engine.plan is not None
        assert "not a GGUF" in engine.plan.reasons["backend"] or "not installed" in engine.plan.reasons["backend"]


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


def test_every_backend_is_registered_once() -> None:
    assert set(BACKENDS) == set(Backend) - {Backend.auto}


# -------------------------------------------------------------------------------------------- LlamaCppEngine
@pytest.fixture(scope="module")
def llama_engine():  # type: ignore[no-untyped-def]
    from omnirun.engine.llamacpp import LlamaCppEngine

    engine = build(ModelConfig(), HardwareConfig())
    assert isinstance(engine, LlamaCppEngine)
    engine.load_model()
    yield engine
    engine.unload_model()


@needs_llama_cpp
def test_llama_cpp_engine_generates_and_records_why(llama_engine) -> None:  # type: ignore[no-untyped-def]
    assert llama_engine.plan.backend == "llama.cpp"
    assert "llama-cpp-python is installed" in llama_engine.plan.reasons["backend"]
    assert llama_engine.model_type == "causal-lm"
    assert llama_engine.max_context and llama_engine.max_context >= 2048
    answer = llama_engine.chat([{"role": "user", "content": "What is the capital of France?"}], do_sample=False)
    assert answer.strip()
    memory = llama_engine.memory()
    assert memory.model_footprint_mb and memory.model_footprint_mb > 10


@needs_llama_cpp
def test_llama_cpp_forced_lengths_batches_and_streams(llama_engine) -> None:  # type: ignore[no-untyped-def]
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
def test_llama_cpp_sampling_is_seeded_and_stops(llama_engine) -> None:  # type: ignore[no-untyped-def]
    a = llama_engine.infer("Tell me a joke.", max_new_tokens=10, seed=3)
    assert a == llama_engine.infer("Tell me a joke.", max_new_tokens=10, seed=3)
    out = llama_engine.generate(["Say hi."], GenerationConfig(do_sample=False, max_new_tokens=200))[0]
    assert out.finish_reason in ("stop", "length") and out.output_tokens <= 200
    with pytest.raises(ValueError, match="beam search"):
        llama_engine.generate(["Hi"], GenerationConfig(do_sample=False, num_beams=2))


@needs_llama_cpp
def test_llama_cpp_tokenizer_adapter(llama_engine) -> None:  # type: ignore[no-untyped-def]
    tok = llama_engine.tokenizer
    assert len(tok) == 49152
    assert tok("Hello world")["input_ids"] == tok.encode("Hello world")
    assert 2 in tok.all_special_ids and 2 in tok.eos_ids
    assert llama_engine.has_chat_template()
    text = llama_engine.render_chat([{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>assistant\n")


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_chat_template_and_tokens_match_transformers(llama_engine, smollm2_engine) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three rivers."}]
    text = smollm2_engine.render_chat(messages)
    assert llama_engine.render_chat(messages) == text
    assert (
        llama_engine.tokenizer.encode(text, False)
        == smollm2_engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    )


@needs_llama_cpp
@pytest.mark.slow
def test_llama_cpp_stays_close_to_fp32(llama_engine, smollm2_engine) -> None:  # type: ignore[no-untyped-def]
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


# ------------------------------------------------------------------------------------------------- the harness
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


# ------------------------------------------------------------------------------- llama.cpp sampling (pure numpy)
def test_sampler_follows_transformers_processors() -> None:
    """Greedy choice with repetition penalty and min_new_tokens, and the top-k/top-p support, as Transformers'
    processors give them (the Sampler is numpy only, so this runs without llama-cpp-python)."""
    import numpy as np
    from transformers.generation import (
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from omnirun.engine.llamacpp import Sampler

    rng = np.random.default_rng(0)
    logits = rng.normal(size=50).astype(np.float32)
    prompt, output = [3, 7, 7], [int(logits.argmax())]
    greedy = GenerationConfig(do_sample=False, repetition_penalty=1.3, min_new_tokens=3)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + output]), torch.tensor(logits[None]))
    expected[0, int(logits.argmax())] = -float("inf")  # pretend the argmax is end-of-sequence: masked until 3 tokens
    sampler = Sampler(greedy, {int(logits.argmax())}, seed=0)
    assert sampler(logits, prompt, output) == int(expected.argmax())

    params = GenerationConfig(do_sample=True, temperature=1.0, top_k=10, top_p=0.6)
    warped = TopPLogitsWarper(0.6)(None, TopKLogitsWarper(10)(None, torch.tensor(logits[None])))
    support = set(torch.nonzero(torch.isfinite(warped[0])).flatten().tolist())
    sampler = Sampler(params, set(), seed=1)
    drawn = {sampler(logits, [], []) for _ in range(300)}
    assert drawn <= support and len(drawn) == len(support)
