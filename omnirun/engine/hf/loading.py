"""Loading helpers of the Transformers backend: the GGUF dense copy, size estimates, tokenizer setup, the
`from_pretrained` weight arguments, bitsandbytes configs, the placement check, memory release."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from omnirun import hardware
from omnirun.config import Device, DType, ModelConfig, ModelInit, ModelType, Quantization
from omnirun.engine import source as models
from omnirun.engine.base import MemoryReport
from omnirun.errors import ConfigError

log = logging.getLogger(__name__)

INT8_CAST_MESSAGE = "MatMul8bitLt: inputs will be cast"
"""bitsandbytes' note, once per int8 layer per step, that it casts fp32/bf16 inputs to fp16 (expected)."""


def dense_copy(source: models.ModelSource) -> Path:
    """The dense safetensors folder for a GGUF source, converting it on first use."""
    import transformers

    gguf = source.gguf_path
    assert gguf is not None
    cached = models.dense_cache_dir(gguf)
    if models.is_complete(cached):
        return cached
    log.warning("converting %s to a dense safetensors cache; this happens once", gguf.name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
        config = transformers.AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file)
        cls = transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModelForCausalLM
        model = cls.from_pretrained(source.path, gguf_file=source.gguf_file, **dequantized())
    except Exception as exc:
        raise models.describe_load_failure(source, exc) from exc
    folder = models.write_dense_cache(model, tokenizer, gguf)
    del model
    gc.collect()
    return folder


def dequantized() -> dict[str, Any]:
    """`from_pretrained` arguments that unpack every GGUF weight (Transformers releases that can keep GGUF blocks
    packed would otherwise try to, and warn when their kernels are missing): the dense copy needs plain tensors."""
    import inspect

    import transformers

    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is None or "dequantize" not in inspect.signature(gguf_config).parameters:
        return {}
    return {"quantization_config": gguf_config(dequantize=True)}


def checkpoint_names(path: str) -> frozenset[str] | None:
    """The tensor names of a local folder's safetensors weights (read from the files' headers, no tensor
    loaded); None when the folder holds none (a hub id, pickle weights)."""
    import json
    import struct

    folder = Path(path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            names.update(k for k in json.loads(f.read(size)) if k != "__metadata__")
    return frozenset(names)


def position_limit(model: Any) -> int | None:
    """The longest input the model's position table takes, in tokens: `max_position_embeddings` (or the
    config's other name for it), less the offset of RoBERTa-style tables whose positions start after the
    padding index (514 entries serve 512 tokens)."""
    import torch

    config = model.config
    values = [getattr(config, n, None) for n in ("max_position_embeddings", "n_positions", "max_sequence_length")]
    limit = next((v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)
    if limit is None:
        return None
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if isinstance(table, torch.nn.Embedding) and table.padding_idx is not None:
        return limit - table.padding_idx - 1
    return limit


def estimate_size(model_cls: Any, config: Any, dtype: DType | None = None) -> hardware.ModelSize:
    """Parameter count (exact, from an empty meta-device model) and KV-cache shape of a config; `dtype` is the
    checkpoint's stored dtype, when known."""
    import torch

    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in model_cls.from_config(config).parameters())
    except Exception:  # exotic architectures: fall back to a rough count from the config
        hidden = getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0)
        layers = getattr(config, "num_hidden_layers", 0) or getattr(config, "num_layers", 0)
        params = 12 * layers * hidden * hidden + getattr(config, "vocab_size", 0) * hidden
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config

    def number(*names: str) -> int:  # vision configs hold per-stage lists (SegFormer's num_attention_heads)
        values = [getattr(text_cfg, n, None) for n in names]
        return next((v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), 0)

    layers, heads = number("num_hidden_layers", "num_layers"), number("num_attention_heads", "num_heads")
    hidden = number("hidden_size", "d_model")
    head_dim = number("head_dim") or (hidden // heads if heads else 0)
    kv_dim = int((number("num_key_value_heads") or heads) * head_dim)
    return hardware.ModelSize(params=int(params), num_layers=int(layers), kv_dim=kv_dim, dtype=dtype)


def refuse_oversized(model: ModelConfig, size: hardware.ModelSize, plan: hardware.HardwarePlan) -> None:
    """ConfigError, before any weight is allocated, when the weights alone (the parameter count from the
    config on the meta device, `estimate_size`, at the planned dtype or quantization) exceed the memory free
    where they go: the GPU's for a CUDA load, the RAM otherwise, and the RAM too for `model.init=random`
    (built on the CPU, then moved). A load that accelerate places (`hardware.device_map`) may offload to disk
    and is left to it."""
    random = model.init == ModelInit.random
    if plan.device_map is not None and not random:
        return
    precision = str(plan.quantization or plan.dtype)
    need = hardware.weight_mb(size.params, precision)
    places = [("RAM", hardware.ram_free_mb())] if random or plan.device != Device.cuda else []
    if plan.device == Device.cuda:
        places.append(("GPU memory", gpu_free_mb()))
    key = f"model.name={model.name!r}" + (" with model.init=random" if random else "")
    for where, free in places:
        if need > free:
            smaller = "hardware.quantization=int4, " if precision not in ("int4", "int8") and not random else ""
            raise ConfigError(
                f"{key}: its {size.params:,} parameters need ~{need:,.0f} MB as {precision} weights, more than the "
                f"{free:,.0f} MB of {where} free; use a smaller model (or model.config_overrides that shrink it), "
                f"{smaller}or a machine with more memory"
            )


def gpu_free_mb() -> float:
    """The free memory of the current CUDA device, in MB (where `.to("cuda")` puts the weights)."""
    import torch

    return float(torch.cuda.mem_get_info()[0]) / hardware.MB


def prepare_tokenizer(tokenizer: Any, model_type: ModelType | None) -> None:
    """Batching needs a pad token; decoder-only models need left padding so new tokens follow the prompt."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left" if model_type == ModelType.causal_lm else "right"


def weight_kwargs(plan: hardware.HardwarePlan, model: ModelConfig, torch: Any) -> dict[str, Any]:
    """The `from_pretrained` arguments that place and type the weights as planned."""
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, plan.dtype),
        "low_cpu_mem_usage": model.low_cpu_mem_usage,
        "use_safetensors": None if model.allow_pickle else True,
    }
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if plan.device_map is not None:
        kwargs["device_map"] = plan.device_map
        if plan.max_memory:
            kwargs["max_memory"] = {device_key(k): v for k, v in plan.max_memory.items()}
    if plan.quantization:
        kwargs["quantization_config"] = bnb_config(plan.quantization, plan.dtype, torch)
        kwargs.setdefault("device_map", {"": str(plan.device)})
    return kwargs


def check_placement(model: Any, plan: hardware.HardwarePlan) -> None:
    """Refuse a model that accelerate placed entirely on disk (or left on the meta device): it loads, then every
    forward pass fails with "Cannot copy out of meta tensor". A partial disk offload runs, and is kept."""
    device_map = getattr(model, "hf_device_map", None) or {}
    places = {str(v) for v in device_map.values()}
    on_meta = not device_map and any(p.device.type == "meta" for p in model.parameters())
    if (places and places <= {"disk", "meta"}) or on_meta:
        need = sum(p.numel() * p.element_size() for p in model.parameters()) / hardware.MB
        raise ConfigError(
            f"hardware.max_memory={plan.max_memory} leaves no device room for the weights: accelerate put the whole "
            f"model on {'/'.join(sorted(places)) or 'meta'}, which cannot run it; raise the limits (the weights "
            f"need ~{need:.0f} MB) or remove hardware.max_memory"
        )


def bnb_config(quantization: Quantization, dtype: DType, torch: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if quantization == Quantization.int8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, DType.bfloat16 if dtype == DType.float32 else dtype),
    )


def quiet_int8_cast_notes() -> None:
    """Keep bitsandbytes' int8 cast note from the user. Its int8 matmul runs in fp16, so every int8 layer
    reports, on every decoding step, that it casts its fp32/bf16 input: hundreds of identical lines per
    prompt about an expected, harmless cast. Only that message is dropped: bitsandbytes 0.45-0.4x raise it
    as a UserWarning, later versions log it on `bitsandbytes.autograd._functions`."""
    warnings.filterwarnings("ignore", message=INT8_CAST_MESSAGE, category=UserWarning, module=r"bitsandbytes\.")
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _Int8CastFilter) for f in bnb_log.filters):
        bnb_log.addFilter(_Int8CastFilter())


class _Int8CastFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(INT8_CAST_MESSAGE)


def add_int4_decode(model: Any, plan: hardware.HardwarePlan) -> hardware.HardwarePlan:
    """Apply `optimize.add_int4_decode` and record in the plan how many layers qualified."""
    from omnirun.engine.hf import optimize

    linear = sum(type(m).__name__ == "Linear" for m in model.modules())
    changed = optimize.add_int4_decode(model)
    reasons = dict(plan.reasons)
    reasons["cpu_int4_decode"] += f" [{changed} of {linear} Linear layers qualified]"
    return replace(plan, cpu_int4_decode=changed > 0, reasons=reasons)


def synchronize(device: str) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def release_memory() -> None:
    """Collect garbage, empty the CUDA cache and return freed heap pages to the OS (glibc malloc_trim)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def device_key(key: str | int) -> str | int:
    """accelerate wants GPU indices in `max_memory` as ints; config files give them as strings."""
    return int(key) if isinstance(key, str) and key.isdigit() else key


def memory_report(model: Any) -> MemoryReport:
    """The model's footprint, this process's RSS and the CUDA allocator's figures."""
    import psutil
    import torch

    footprint = model.get_memory_footprint() / hardware.MB if model is not None else None
    cuda = torch.cuda.is_available()
    return MemoryReport(
        model_footprint_mb=footprint,
        rss_mb=psutil.Process().memory_info().rss / hardware.MB,
        cuda_allocated_mb=torch.cuda.memory_allocated() / hardware.MB if cuda else None,
        cuda_reserved_mb=torch.cuda.memory_reserved() / hardware.MB if cuda else None,
    )


def logits_of(model: Any, ids: list[int]) -> Any:
    """The model's logits for one sequence of token ids (one forward pass, no gradients)."""
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids], device=model.device)).logits
