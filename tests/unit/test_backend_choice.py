"""The fast paths: backend choice, exact int4 decoding copies, the agreement check, the llama.cpp engine and a
smoke run of benchmarks/compare.py. No timings here: speed lives in the benchmark."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from omnirun import hardware, plugins
from omnirun.config import Backend, Device, DType, GenerationConfig, HardwareConfig, Quantization
from omnirun.engine.hf import optimize
from omnirun.errors import ConfigError
from omnirun.hardware import GpuInfo, HardwareInfo, ModelSize, Placement

from samples import snap_to_grid

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


def test_dtype_checkpoint_keeps_llama_cpp() -> None:
    """llama.cpp runs the GGUF's own weight types: exactly what dtype=checkpoint asks for."""
    backend, _ = choose("auto", HardwareConfig(dtype=DType.checkpoint), machine(), gguf=True)
    assert backend == "llama.cpp"


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
    with pytest.raises(ConfigError, match="backend must be auto or an installed backend"):
        choose("tensorrt-llm", HardwareConfig(), machine(), gguf=True)


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
def test_int4_decode_off_and_why(request_: HardwareConfig, kwargs: dict[str, Any], why: str) -> None:
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
    grid = optimize.int4_grid(linear.weight)
    assert grid is not None
    layer = optimize.Int4DecodeLinear(linear, *grid)
    with torch.inference_mode():
        for rows in (1, 3, 4):  # the int4 copy, bf16 activations: close to fp32
            x = torch.randn(1, rows, 64)
            torch.testing.assert_close(layer(x), linear(x), rtol=0.02, atol=0.05)
        x = torch.randn(2, 8, 64)  # more rows: the fp32 weight itself
        torch.testing.assert_close(layer(x), linear(x), rtol=0, atol=0)


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


def test_common_prefix() -> None:
    assert optimize.common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert optimize.common_prefix([], [1]) == 0


def test_every_built_in_backend_registers_through_its_entry_point() -> None:
    assert set(plugins.backends()) >= set(Backend) - {Backend.auto}
    for name, spec in plugins.backends().items():
        assert spec.name == name and spec.capabilities


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
