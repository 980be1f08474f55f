"""The hardware planner, driven with simulated machines (plan() is pure), plus detect() on this machine."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnirun import hardware
from omnirun.config import Backend, Device, DType, HardwareConfig, Quantization
from omnirun.errors import ConfigError
from omnirun.hardware import GpuInfo, HardwareInfo, HardwarePlan, ModelSize, Placement, planner

GB = 1024.0  # MB per GB: HardwareInfo counts in MB


SMALL = ModelSize(params=1_200_000_000, num_layers=16, kv_dim=512)


BIG = ModelSize(params=7_000_000_000, num_layers=32, kv_dim=1024)


TINY = ModelSize(params=1_000_000, num_layers=2, kv_dim=64)


def machine(*gpus: GpuInfo, ram_gb: float = 32, bnb: bool = True, mps: bool = False, cores: int = 8) -> HardwareInfo:
    return HardwareInfo(
        cpu_name="Simulated CPU",
        cpu_cores=cores,
        ram_total_mb=ram_gb * GB,
        ram_available_mb=ram_gb * GB * 0.75,
        gpus=gpus,
        mps=mps,
        bitsandbytes=bnb,
    )


def gpu(free_gb: float, total_gb: float | None = None, bf16: bool = True) -> GpuInfo:
    return GpuInfo("Simulated GPU", (total_gb or free_gb) * GB, free_gb * GB, bf16)


def request(**kwargs: object) -> HardwareConfig:
    return HardwareConfig(**kwargs)  # type: ignore[arg-type]


CPU_ONLY = machine()


GPU_16GB = machine(gpu(15.5, 16))


def test_no_gpu_runs_fp32_on_cpu() -> None:
    p = hardware.plan(request(), SMALL, CPU_ONLY)
    assert (p.device, p.dtype, p.quantization) == ("cpu", "float32", None)
    assert "CPU" in p.reasons["device"]
    assert "float32" in p.reasons["dtype"]
    assert p.device_map is None


def test_small_model_on_16gb_gpu_uses_bf16_without_quantization() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), SMALL, GPU_16GB)
    assert (p.device, p.dtype, p.quantization) == ("cuda", "bfloat16", None)
    assert "Simulated GPU" in p.reasons["device"]
    assert "bfloat16" in p.reasons["dtype"]
    assert p.reasons["quantization"].startswith("none")
    assert "fit" in p.reasons["quantization"]


def test_gpu_without_bf16_uses_fp16() -> None:
    p = hardware.plan(request(), SMALL, machine(gpu(15.5, 16, bf16=False)))
    assert (p.device, p.dtype) == ("cuda", "float16")
    assert "no bf16" in p.reasons["dtype"]


def test_bf16_requested_on_gpu_without_bf16_is_rejected() -> None:
    with pytest.raises(ConfigError, match="bfloat16"):
        hardware.plan(request(dtype=DType.bfloat16), SMALL, machine(gpu(16, bf16=False)))


def test_mixed_gpus_fall_back_to_fp16() -> None:
    p = hardware.plan(request(), SMALL, machine(gpu(16), gpu(16, bf16=False)))
    assert p.dtype == "float16"


def test_big_model_on_9gb_gpu_needs_int8() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(gpu(9, 12)))
    assert (p.device, p.dtype, p.quantization) == ("cuda", "bfloat16", "int8")
    assert p.reasons["quantization"].startswith("int8")
    assert "exceed" in p.reasons["quantization"]


def test_big_model_on_5gb_gpu_needs_int4() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(gpu(5, 8)))
    assert p.quantization == "int4"
    assert p.reasons["quantization"].startswith("int4")
    assert "fits" in p.reasons["quantization"]


def test_model_too_big_even_for_int4_still_gets_int4_with_a_warning_reason() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(gpu(2, 4)))
    assert p.quantization == "int4"
    assert "OOM" in p.reasons["quantization"]


def test_auto_quantization_without_bitsandbytes_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="omnirun.hardware"):
        p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(gpu(9, 12), bnb=False))
    assert p.quantization is None
    assert "bitsandbytes" in p.reasons["quantization"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "omnirun.hardware"]
    assert len(warnings) == 1
    assert "bitsandbytes" in warnings[0].getMessage()


def test_auto_quantization_when_it_fits_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="omnirun.hardware"):
        hardware.plan(request(quantization=Quantization.auto), SMALL, machine(gpu(16), bnb=False))
    assert not caplog.records


def test_auto_quantization_on_cpu_uses_ram_budget() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(ram_gb=16))
    # fp32 7B is ~31 GB, int8 ~7.8 GB; 16 GB of RAM with 12 GB available and 90% headroom -> int8
    assert (p.device, p.dtype, p.quantization) == ("cpu", "float32", "int8")


@pytest.mark.parametrize("quantization", [Quantization.int8, Quantization.int4])
def test_explicit_quantization_without_bitsandbytes_is_an_error_when_strict(quantization: Quantization) -> None:
    with pytest.raises(ConfigError, match="bitsandbytes"):
        hardware.plan(request(quantization=quantization, quantization_strict=True), SMALL, machine(gpu(16), bnb=False))


@pytest.mark.parametrize("quantization", [Quantization.int8, Quantization.int4])
def test_explicit_quantization_without_bitsandbytes_falls_back_with_a_warning(
    quantization: Quantization, caplog: pytest.LogCaptureFixture
) -> None:
    """The seed's promise: when quantization cannot be had, the model loads unquantized (and says so)."""
    with caplog.at_level(logging.WARNING, logger="omnirun.hardware"):
        p = hardware.plan(request(quantization=quantization), SMALL, machine(gpu(16), bnb=False))
    assert p.quantization is None
    reason = p.reasons["quantization"]
    assert reason.startswith(f"none: {quantization} was requested") and "bitsandbytes is not installed" in reason
    assert "quantization_strict" in reason
    assert [r for r in caplog.records if "bitsandbytes" in r.getMessage() and r.levelno == logging.WARNING]


@pytest.mark.parametrize("quantization", [Quantization.int8, Quantization.int4])
def test_explicit_quantization_is_kept(quantization: Quantization) -> None:
    p = hardware.plan(request(quantization=quantization), TINY, CPU_ONLY)
    assert p.quantization == str(quantization)
    assert "as requested" in p.reasons["quantization"]


def test_quantization_on_mps_is_an_error() -> None:
    with pytest.raises(ConfigError, match="MPS"):
        hardware.plan(request(quantization=Quantization.int8), SMALL, machine(mps=True))


def test_cuda_requested_without_gpu_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"hardware\.device"):
        hardware.plan(request(device=Device.cuda), SMALL, CPU_ONLY)


def test_mps_requested_without_mps_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"hardware\.device=mps"):
        hardware.plan(request(device=Device.mps), SMALL, CPU_ONLY)


def test_mps_chosen_when_no_cuda() -> None:
    p = hardware.plan(request(), SMALL, machine(mps=True))
    assert (p.device, p.dtype) == ("mps", "float16")


def test_cpu_requested_on_gpu_machine() -> None:
    p = hardware.plan(request(device=Device.cpu), SMALL, GPU_16GB)
    assert (p.device, p.dtype) == ("cpu", "float32")
    assert p.reasons["device"] == "cpu as requested"


def test_manual_mode_keeps_fp32_on_cuda() -> None:
    p = hardware.plan(request(), SMALL, GPU_16GB, auto=False)
    assert (p.device, p.dtype, p.quantization) == ("cuda", "float32", None)
    assert "manual" in p.reasons["dtype"]


def test_auto_dtype_reason_says_it_is_the_planners_choice() -> None:
    p = hardware.plan(request(), ModelSize(params=10, dtype=DType.bfloat16), CPU_ONLY)
    assert p.dtype == "float32"
    assert "planner's choice for hardware.dtype=auto" in p.reasons["dtype"]
    assert "stored in bfloat16" in p.reasons["dtype"]


@pytest.mark.parametrize(
    ("stored", "hw", "expected", "why"),
    [
        (DType.bfloat16, CPU_ONLY, "bfloat16", "checkpoint's own dtype"),
        (DType.float16, GPU_16GB, "float16", "checkpoint's own dtype"),
        (DType.bfloat16, machine(gpu(16, bf16=False)), "float16", "lacks"),
        (None, CPU_ONLY, "float32", "does not say"),
    ],
)
def test_checkpoint_dtype(stored: DType | None, hw: HardwareInfo, expected: str, why: str) -> None:
    """hardware.dtype=checkpoint: the weights' stored dtype (Transformers' dtype="auto"), not the planner's."""
    p = hardware.plan(request(dtype=DType.checkpoint), ModelSize(params=10, dtype=stored), hw)
    assert p.dtype == expected
    assert why in p.reasons["dtype"] and "dtype=checkpoint" in p.reasons["dtype"]


def test_manual_mode_keeps_requested_dtype() -> None:
    p = hardware.plan(request(dtype=DType.float16), SMALL, GPU_16GB, auto=False)
    assert p.dtype == "float16"
    assert p.reasons["dtype"] == "float16 as requested"


def test_manual_mode_refuses_auto_quantization() -> None:
    with pytest.raises(ConfigError, match="auto_config"):
        hardware.plan(request(quantization=Quantization.auto), SMALL, GPU_16GB, auto=False)


def test_device_map_recorded() -> None:
    p = hardware.plan(request(device_map="auto", max_memory={"0": "10GiB", "cpu": "30GiB"}), BIG, GPU_16GB)
    assert p.device_map == "auto"
    assert "'auto'" in p.reasons["device_map"]
    assert p.max_memory == {"0": "10GiB", "cpu": "30GiB"}


def test_no_device_map_no_reason() -> None:
    p = hardware.plan(request(), SMALL, GPU_16GB)
    assert p.device_map is None
    assert "device_map" not in p.reasons


def test_num_threads_reason_on_cpu() -> None:
    assert hardware.plan(request(num_threads=3), TINY, CPU_ONLY).num_threads == 3
    assert "3 CPU threads" in hardware.plan(request(num_threads=3), TINY, CPU_ONLY).reasons["num_threads"]
    p = hardware.plan(request(), TINY, machine(cores=6))
    assert p.num_threads is None
    assert "(6)" in p.reasons["num_threads"]


SCENARIOS = {
    "cpu": (request(), SMALL, CPU_ONLY, True),
    "gpu-bf16": (request(quantization=Quantization.auto), SMALL, GPU_16GB, True),
    "gpu-fp16": (request(), SMALL, machine(gpu(16, bf16=False)), True),
    "int8": (request(quantization=Quantization.auto), BIG, machine(gpu(9)), True),
    "int4": (request(quantization=Quantization.auto), BIG, machine(gpu(5)), True),
    "no-bnb": (request(quantization=Quantization.auto), BIG, machine(gpu(9), bnb=False), True),
    "mps": (request(), SMALL, machine(mps=True), True),
    "manual": (request(), SMALL, GPU_16GB, False),
    "explicit": (
        request(device=Device.cpu, dtype=DType.bfloat16, quantization=Quantization.int4),
        TINY,
        CPU_ONLY,
        True,
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_plan_explains_itself(name: str) -> None:
    req, size, hw, auto = SCENARIOS[name]
    p = hardware.plan(req, size, hw, auto=auto)
    assert isinstance(p, HardwarePlan)
    for key in ("device", "dtype", "quantization", "batch_size"):
        assert isinstance(p.reasons.get(key), str)
        assert p.reasons[key].strip(), f"empty reason for {key}"
    assert str(p.batch_size) in p.reasons["batch_size"]


@pytest.mark.parametrize(("hw", "cap"), [(machine(ram_gb=1024), 64), (machine(gpu(80)), 64)])
def test_batch_size_cap(hw: HardwareInfo, cap: int) -> None:
    p = hardware.plan(request(), TINY, hw)
    assert p.batch_size == cap
    assert f"capped at {cap}" in p.reasons["batch_size"]


def test_batch_size_rounds_down_to_a_power_of_two() -> None:
    # 2 MB of KV per sequence (1 layer, 256 wide, 2 bytes, 2048 tokens); half of 20 MB fits 5 -> 4
    reasons: dict[str, str] = {}
    size = ModelSize(params=0, num_layers=1, kv_dim=256)
    assert planner.choose_batch_size(size, "cuda", "bfloat16", 20.0, reasons) == 4
    assert reasons["batch_size"].startswith("4:")


def test_batch_size_is_one_when_nothing_fits() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(gpu(2)))
    assert p.batch_size == 1


def test_batch_size_without_kv_shape_takes_the_cap() -> None:
    assert planner.choose_batch_size(ModelSize(params=10), "cpu", "float32", 1000.0, {}) == 64
    assert planner.choose_batch_size(ModelSize(params=10), "cpu", "float32", 1000.0, {}, cap=16) == 16


@settings(max_examples=60, deadline=None)
@given(
    params=st.integers(min_value=0, max_value=80_000_000_000),
    layers=st.integers(min_value=0, max_value=96),
    kv_dim=st.integers(min_value=0, max_value=16384),
    free_gb=st.floats(min_value=0.0, max_value=200.0),
    on_gpu=st.booleans(),
    quantization=st.sampled_from([None, Quantization.auto, Quantization.int8, Quantization.int4]),
)
def test_batch_size_is_a_capped_power_of_two(
    params: int, layers: int, kv_dim: int, free_gb: float, on_gpu: bool, quantization: Quantization | None
) -> None:
    hw = machine(gpu(free_gb, max(free_gb, 1.0))) if on_gpu else machine(ram_gb=free_gb)
    p = hardware.plan(request(quantization=quantization), ModelSize(params, layers, kv_dim), hw)
    assert 1 <= p.batch_size <= 64
    assert p.batch_size & (p.batch_size - 1) == 0
    assert p.device == ("cuda" if on_gpu else "cpu")
    assert set(p.reasons) >= {"device", "dtype", "quantization", "batch_size"}


def test_weight_mb() -> None:
    assert hardware.weight_mb(1024**2, "float32") == 4.0
    assert hardware.weight_mb(1024**2, "bfloat16") == 2.0
    assert hardware.weight_mb(1024**2, "int4") == 0.5


def test_gpu_budget_sums_free_memory_with_headroom() -> None:
    hw = machine(gpu(10), gpu(6))
    assert planner.memory_budget_mb("cuda", hw) == pytest.approx(16 * GB * planner.GPU_HEADROOM)
    assert planner.memory_budget_mb("cpu", hw) == pytest.approx(hw.ram_available_mb * planner.GPU_HEADROOM)


def test_detect_this_machine() -> None:
    import torch

    info = hardware.detect()
    assert isinstance(info, HardwareInfo)
    assert info.cpu_cores >= 1
    assert info.cpu_name
    assert info.ram_total_mb > 0
    assert 0 < info.ram_available_mb <= info.ram_total_mb
    assert info.cuda == torch.cuda.is_available()
    assert len(info.gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for g in info.gpus:
        assert 0 <= g.free_mb <= g.total_mb
    plan = hardware.plan(HardwareConfig(), TINY, info)
    assert plan.device in ("cpu", "cuda", "mps")


def test_plan_holds_the_config_enums_and_serializes_as_their_values() -> None:
    p = hardware.plan(request(quantization=Quantization.auto), BIG, machine(gpu(9, 12)))
    assert (type(p.device), type(p.dtype), type(p.quantization), type(p.backend)) == (
        Device,
        DType,
        Quantization,
        str,  # a backend is any registered name (omnirun.plugins), not a closed set
    )
    saved = json.loads(json.dumps(asdict(p)))
    assert (saved["device"], saved["dtype"], saved["quantization"], saved["backend"]) == (
        "cuda",
        "bfloat16",
        "int8",
        "transformers",
    )


def test_place_resolves_the_device_once_for_backend_and_plan() -> None:
    placement = hardware.place(request(), CPU_ONLY, gguf=False)
    assert placement == Placement(Device.cpu, placement.device_reason, Backend.transformers, placement.backend_reason)
    assert "CPU" in placement.device_reason and "not a GGUF" in placement.backend_reason
    p = hardware.plan(request(), SMALL, CPU_ONLY, placement=placement)
    assert (p.device, p.reasons["device"], p.reasons["backend"]) == (
        Device.cpu,
        placement.device_reason,
        placement.backend_reason,
    )
    with pytest.raises(ConfigError, match=r"hardware\.device=cuda"):
        hardware.place(request(device=Device.cuda), CPU_ONLY, gguf=True)
