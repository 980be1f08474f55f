"""The closed sets of values config keys take, as StrEnums whose values are what users type."""

from __future__ import annotations

from enum import StrEnum


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class DType(StrEnum):
    auto = "auto"
    checkpoint = "checkpoint"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Backend(StrEnum):
    """The built-in backends' names (for code and tests that name one); `hardware.backend` accepts any installed
    backend (`omnirun.plugins.backends()`), and the core never enumerates this class."""

    auto = "auto"
    transformers = "transformers"
    llama_cpp = "llama.cpp"
    diffusers = "diffusers"
    onnxruntime = "onnxruntime"


class ModelType(StrEnum):
    causal_lm = "causal-lm"
    seq2seq = "seq2seq"


class ModelInit(StrEnum):
    pretrained = "pretrained"
    random = "random"


class ExportFormat(StrEnum):
    safetensors = "safetensors"
    onnx = "onnx"


class Quantization(StrEnum):
    auto = "auto"
    int8 = "int8"
    int4 = "int4"


class TaskName(StrEnum):
    generate = "generate"
    chat = "chat"
    batch = "batch"
    stream = "stream"
    benchmark = "benchmark"
    export = "export"
    embed = "embed"
    classify = "classify"
    token_classify = "token_classify"
    qa = "qa"
    fill_mask = "fill_mask"
    rerank = "rerank"
    image_classify = "image_classify"
    detect = "detect"
    segment = "segment"
    audio_classify = "audio_classify"
    transcribe = "transcribe"
    caption = "caption"
    image = "image"


class Pooling(StrEnum):
    mean = "mean"
    cls = "cls"
    last = "last"


class Aggregation(StrEnum):
    none = "none"
    simple = "simple"
    first = "first"
    average = "average"
    max = "max"


class EmbeddingsFormat(StrEnum):
    jsonl = "jsonl"
    npy = "npy"


class Reasoning(StrEnum):
    """generation.reasoning. OmegaConf matches a value to a member by name, so the members are named as the
    values are, although `split` and `strip` shadow str's methods on the members (mypy's two ignores)."""

    auto = "auto"
    keep = "keep"
    split = "split"  # type: ignore[assignment]
    strip = "strip"  # type: ignore[assignment]


class TemplateMode(StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


class Overflow(StrEnum):
    clip = "clip"
    error = "error"


class OnError(StrEnum):
    skip = "skip"
    fail = "fail"
