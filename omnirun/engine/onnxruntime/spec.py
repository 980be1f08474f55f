"""The onnxruntime backend as `omnirun.plugins` sees it: Hugging Face causal LMs exported once by
onnxruntime-genai's builder, text generation on the CPU; `auto` takes the fp32 export for an ordinary causal LM
of a family the builder exports plainly, big enough for the export to pay off."""

from __future__ import annotations

import importlib.util

from omnirun.config import Device, DType
from omnirun.engine.onnxruntime import decode
from omnirun.engine.onnxruntime.engine import OrtEngine
from omnirun.plugins import BackendRequest, BackendSpec, Capability

NAME = "onnxruntime"
BATCH_CAP = 32
"""onnxruntime-genai's largest batch on the CPU (its generator refuses more)."""
AUTO_ARCHITECTURES = frozenset(
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
the ones `auto` may take this backend for. Others stay on Transformers unless asked for."""
AUTO_MIN_PARAMS = 50_000_000
"""Below this, `auto` keeps Transformers: the first run's export (seconds to minutes) outweighs the speed-up
over the short runs small models get."""
EXPORT_HEADROOM = 1.5
"""The export's files need this much more free disk than its fp32 weights (graph, tokenizer, the temporary copy)."""
AUTO_REASON = (
    "onnxruntime: an ordinary Hugging Face causal LM on the CPU and onnxruntime-genai is installed; its fp32 "
    "export (made once, cached) gives the same greedy tokens as Transformers fp32 (teacher-forced agreement 1.000) "
    "and decoded 2.6x and batched 1.6x faster than plain Transformers fp32 on this project's CPU; int8 / int4 "
    "weights agreed on only 0.967 / 0.69 of greedy tokens and stay opt-in through hardware.quantization "
    "(benchmarks/results/cpu_paths.md)"
)


def problem(request: BackendRequest) -> str | None:
    """Why the onnxruntime backend cannot serve this request, or None when it can."""
    hardware = request.hardware
    if request.device != Device.cpu:
        return f"it runs on the CPU here, and the device is {request.device} (set hardware.device=cpu)"
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed: `pip install 'omnirun[onnxruntime]'`"
    if hardware.dtype not in (DType.auto, DType.checkpoint, DType.float32):
        return f"hardware.dtype={hardware.dtype} is not offered (it computes in float32; weights via quantization)"
    if hardware.device_map is not None:
        return "hardware.device_map is a Transformers option"
    return None


def auto_problem(request: BackendRequest) -> str | None:
    """Why `auto` does not take the onnxruntime backend for this request, or None when it does."""
    hardware = request.hardware
    if request.gguf:
        return "the model is a GGUF file"
    if not hardware.optimize:
        return "automatic optimizations are off"
    found = problem(request)
    if found:
        return found
    asked = (("dtype", hardware.dtype != DType.auto), ("quantization", hardware.quantization))
    explicit = [name for name, value in asked if value]
    if explicit:
        return f"hardware.{'/'.join(explicit)} set explicitly, which only Transformers honours"
    if request.generation is not None and not decode.supports(request.generation):
        return decode.UNSUPPORTED.split(";")[0]
    if importlib.util.find_spec("onnx") is None:
        return "the onnx package is not installed: `pip install 'omnirun[onnxruntime]'`"
    facts = request.model_facts
    if facts is None and request.source is not None:
        from omnirun.engine.onnxruntime.export import candidate

        facts = candidate(request.source)
    if facts is None:
        return "nothing is known of the model's architecture and size"
    if facts.architecture not in AUTO_ARCHITECTURES:
        return f"architecture {facts.architecture} is not one auto exports (set hardware.backend=onnxruntime to try)"
    if facts.params is None or facts.params < AUTO_MIN_PARAMS:
        return (
            f"{facts.params or 'an unknown number of'} parameters, under the {AUTO_MIN_PARAMS:,} for which "
            "a first run's export pays off (set hardware.backend=onnxruntime to export anyway)"
        )
    need = int(facts.params * 4 * EXPORT_HEADROOM)
    if need > facts.free_disk_bytes:
        free = facts.free_disk_bytes / 2**30
        return f"its fp32 export needs ~{need / 2**30:.1f} GiB of disk, {free:.1f} GiB free"
    return None


BACKEND = BackendSpec(
    name=NAME,
    factory=OrtEngine,
    capabilities=frozenset({Capability.generate}),
    summary="Hugging Face causal LMs exported once to ONNX, run on the CPU by onnxruntime-genai",
    problem=problem,
    auto_problem=auto_problem,
    auto_reason=AUTO_REASON,
    auto_priority=10,
    batch_cap=BATCH_CAP,
    honours=frozenset(),  # none of model.config_overrides / num_labels / init / attn_implementation
    extras=("onnxruntime",),
)
