"""The backend for a request on its device, and the Transformers backend's measured CPU speed-up: pure
functions of the request and a `HardwareInfo`, each returning its reason (used by `planner.place` and `plan`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from omnirun.checks import parse_choice
from omnirun.config import Backend, Device, DType, HardwareConfig, Quantization
from omnirun.errors import ConfigError
from omnirun.hardware.detect import HardwareInfo

AUTO_ONNX_ARCHITECTURES = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "Phi3ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "GraniteForCausalLM",
        "OlmoForCausalLM",
    }
)
"""Decoder-only architectures onnxruntime-genai's builder exports as plain causal LMs (text in, logits out):
the ones `auto` may take the onnxruntime backend for. Others stay on Transformers unless asked for."""
AUTO_ONNX_MIN_PARAMS = 50_000_000
"""Below this, `auto` keeps Transformers: the first run's export (seconds to minutes) outweighs the speed-up
over the short runs small models get."""
EXPORT_HEADROOM = 1.5
"""The export's files need this much more free disk than its fp32 weights (graph, tokenizer, the temporary copy)."""


@dataclass(frozen=True)
class ExportCandidate:
    """What `auto` needs to know about an ordinary (non-GGUF) Hugging Face model to run it through onnxruntime."""

    architecture: str | None
    """`architectures[0]` of its config (None when its config is not on this machine)."""
    params: int | None
    """Its parameter count, from the safetensors headers (None when unknown)."""
    free_disk_bytes: int
    """Free space where the export would be cached."""


def choose_backend(
    request: HardwareConfig,
    hw: HardwareInfo,
    *,
    device: Device,
    gguf: bool,
    batched: bool = False,
    candidate: ExportCandidate | None = None,
) -> tuple[Backend, str]:
    """The backend for `request.backend` on the resolved `device`, and why: `llama.cpp` for a GGUF model on
    the CPU when llama-cpp-python is installed, `request.optimize` is on, nothing asks for Transformers' own
    options (dtype, quantization, device_map) and prompts go one at a time (`batched` false); `onnxruntime`
    (fp32) for an ordinary Hugging Face causal LM (`candidate`) on the CPU under the same conditions
    (`onnxruntime_auto_problem`); else `transformers`. Raises ConfigError when an explicit backend cannot be
    honoured."""
    requested = parse_choice("hardware.backend", Backend, request.backend)
    if requested == Backend.llama_cpp:
        problem = llama_cpp_problem(request, device, hw, gguf)
        if problem:
            raise ConfigError(f"backend=llama.cpp: {problem}; use backend=auto or transformers")
        return Backend.llama_cpp, "llama.cpp as requested"
    if requested == Backend.transformers:
        return Backend.transformers, "transformers as requested"
    if requested == Backend.onnxruntime:
        problem = onnxruntime_problem(request, device)
        if problem:
            raise ConfigError(f"backend=onnxruntime: {problem}; use backend=transformers")
        return Backend.onnxruntime, "onnxruntime as requested"
    if not gguf and candidate is not None:
        problem = onnxruntime_auto_problem(request, device, candidate)
        if problem is None:
            return Backend.onnxruntime, ONNX_AUTO_REASON
        return Backend.transformers, f"transformers: onnxruntime not used ({problem})"
    problem = llama_cpp_problem(request, device, hw, gguf) if request.optimize else "automatic optimizations are off"
    if not problem and batched:
        problem = (
            "a batched run: Transformers' fp32 prefill and batched decoding beat llama.cpp's Q4_1 kernels on this "
            "project's CPU, 60-67 against 46 output tok/s over 64 prompts (benchmarks/results)"
        )
    if problem:
        return Backend.transformers, f"transformers: llama.cpp not used ({problem})"
    return Backend.llama_cpp, (
        "llama.cpp: a GGUF model on the CPU and llama-cpp-python is installed; its kernels run the GGUF weights "
        "as they are and decoded 6-8x faster than plain Transformers fp32 on this project's CPU, agreeing with fp32 "
        "on 98% of greedy tokens under teacher forcing (bf16: 97%; benchmarks/results)"
    )


def llama_cpp_problem(request: HardwareConfig, device: Device, hw: HardwareInfo, gguf: bool) -> str | None:
    """Why the llama.cpp backend cannot serve this request, or None when it can."""
    if not gguf:
        return "the model is not a GGUF file"
    if device != Device.cpu:
        return f"it runs on the CPU here, and the device is {device}"
    if not hw.llama_cpp:
        return "llama-cpp-python is not installed: `pip install 'omnirun[llama-cpp]'`"
    explicit = [
        name
        for name, value in (
            ("dtype", request.dtype not in (DType.auto, DType.checkpoint)),  # llama.cpp runs the GGUF's own types
            ("quantization", request.quantization),
        )
        if value
    ]
    if request.device_map is not None:
        explicit.append("device_map")
    if explicit:
        return f"hardware.{'/'.join(explicit)} set explicitly, which only Transformers honours"
    return None


def onnxruntime_problem(request: HardwareConfig, device: Device) -> str | None:
    """Why the onnxruntime backend cannot serve this request, or None when it can."""
    if device != Device.cpu:
        return f"it runs on the CPU here, and the device is {device} (set hardware.device=cpu)"
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed: `pip install 'omnirun[onnxruntime]'`"
    if request.dtype not in (DType.auto, DType.checkpoint, DType.float32):
        return f"hardware.dtype={request.dtype} is not offered (it computes in float32; weights via quantization)"
    if request.device_map is not None:
        return "hardware.device_map is a Transformers option"
    return None


ONNX_AUTO_REASON = (
    "onnxruntime: an ordinary Hugging Face causal LM on the CPU and onnxruntime-genai is installed; its fp32 "
    "export (made once, cached) gives the same greedy tokens as Transformers fp32 (teacher-forced agreement 1.000) "
    "and decoded 2.6x and batched 1.6x faster than plain Transformers fp32 on this project's CPU; int8 / int4 "
    "weights agreed on only 0.967 / 0.69 of greedy tokens and stay opt-in through hardware.quantization "
    "(benchmarks/results/cpu_paths.md)"
)


def onnxruntime_auto_problem(request: HardwareConfig, device: Device, candidate: ExportCandidate) -> str | None:
    """Why `auto` does not take the onnxruntime backend for this model, or None when it does."""
    if not request.optimize:
        return "automatic optimizations are off"
    problem = onnxruntime_problem(request, device)
    if problem:
        return problem
    asked = (("dtype", request.dtype != DType.auto), ("quantization", request.quantization))
    explicit = [name for name, value in asked if value]
    if explicit:
        return f"hardware.{'/'.join(explicit)} set explicitly, which only Transformers honours"
    if importlib.util.find_spec("onnx") is None:
        return "the onnx package is not installed: `pip install 'omnirun[onnxruntime]'`"
    if candidate.architecture not in AUTO_ONNX_ARCHITECTURES:
        arch = candidate.architecture
        return f"architecture {arch} is not one auto exports (set hardware.backend=onnxruntime to try)"
    if candidate.params is None or candidate.params < AUTO_ONNX_MIN_PARAMS:
        return (
            f"{candidate.params or 'an unknown number of'} parameters, under the {AUTO_ONNX_MIN_PARAMS:,} for which "
            "a first run's export pays off (set hardware.backend=onnxruntime to export anyway)"
        )
    need = int(candidate.params * 4 * EXPORT_HEADROOM)
    if need > candidate.free_disk_bytes:
        free = candidate.free_disk_bytes / 2**30
        return f"its fp32 export needs ~{need / 2**30:.1f} GiB of disk, {free:.1f} GiB free"
    return None


def choose_cpu_int4_decode(
    request: HardwareConfig,
    device: Device,
    quantization: Quantization | None,
    hw: HardwareInfo,
    reasons: dict[str, str],
    optimize: bool,
) -> bool:
    """int4 decoding copies for fp32 Transformers models on the CPU, unless anything asks otherwise."""
    if device != Device.cpu:
        return False
    problem = None
    if not optimize:
        problem = "automatic optimizations are off"
    elif request.dtype != DType.auto:
        problem = "hardware.dtype set explicitly"
    elif quantization:
        problem = "bitsandbytes quantization requested"
    elif request.device_map is not None:
        problem = "a device_map was requested"
    elif not hw.int4_kernels:
        problem = "this torch has no CPU int4 matmul"
    if problem:
        reasons["cpu_int4_decode"] = f"off: {problem}"
        return False
    reasons["cpu_int4_decode"] = (
        "on: Linear layers whose weights lie exactly on a 4-bit grid (dequantized Q4_1 GGUF) decode single "
        "streams from an int4 copy (lossless in the weights) and the output head from a bf16 copy, ~1.6x fp32 "
        "here, parting from fp32 greedy only at near-ties; prefill and batches stay fp32 (dynamic int8 was "
        "faster but agreed with fp32 on only ~35% of greedy tokens)"
    )
    return True
