"""What the Transformers backend reads before any weights: the model's config (with `model.config_overrides` and
`model.num_labels` applied), the dtype the checkpoint is stored in, and the preprocessor its head takes (a
tokenizer for text, an image processor or feature extractor otherwise)."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

from omnirun.config import DType, ModelConfig, ModelInit
from omnirun.engine import source as models
from omnirun.engine.capabilities import Head
from omnirun.errors import ConfigError

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
)
"""A local folder without any of these has no tokenizer (Transformers would fail with a confusing message)."""

SAFETENSORS_DTYPES = {"F32": DType.float32, "F16": DType.float16, "BF16": DType.bfloat16}

LABEL_NAME_BYTES = 250
"""Memory per label of a config's `id2label` and `label2id` (two dict entries, a name string, an int)."""


def apply_overrides(config: Any, model: ModelConfig) -> None:
    """Set `model.config_overrides` and `model.num_labels` on a Transformers config. Each override key must
    already exist on that config (an attribute or a key of its `to_dict()`): a typo is a ConfigError naming it."""
    known = set(config.to_dict())
    for key, value in (model.config_overrides or {}).items():
        if not (hasattr(config, key) or key in known):
            raise ConfigError(
                f"model.config_overrides: {type(config).__name__} has no key {key!r}; "
                "use a key of the model's config.json"
            )
        if key == "num_labels":
            check_num_labels(config, value, "model.config_overrides.num_labels")
        setattr(config, key, value)
    if model.num_labels is not None:
        check_num_labels(config, model.num_labels, "model.num_labels")
        config.num_labels = model.num_labels  # also rebuilds id2label / label2id


def check_num_labels(config: Any, labels: Any, key: str) -> None:
    """ConfigError before a head of `labels` outputs is made, when its names (`id2label`, built as the config
    takes the number) and its weights (`labels` x the hidden size, float32) exceed the free memory."""
    from omnirun.hardware import MB, ram_free_mb

    if not isinstance(labels, int) or isinstance(labels, bool):
        return
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    widths = [getattr(text, n, None) for n in ("hidden_size", "d_model", "dim")]
    hidden = next((w for w in widths if isinstance(w, int) and not isinstance(w, bool) and w > 0), 0)
    need = labels * (4 * (hidden + 1) + LABEL_NAME_BYTES) / MB
    free = ram_free_mb()
    if need > free:
        raise ConfigError(
            f"{key}={labels:,}: a head of {labels:,} labels needs ~{need:,.0f} MB (its {hidden}-wide float32 weights "
            f"and the id2label names), more than the {free:,.0f} MB of RAM free; set it to the number of classes "
            "the data has"
        )


def checkpoint_dtype(config: Any, path: str) -> DType | None:
    """The dtype the weights are stored in: the config's `dtype`, else the first floating tensor of a local
    safetensors file; None when neither says (or it is not fp32, fp16 or bf16)."""
    value = getattr(config, "dtype", None)
    if value is not None:
        name = str(value).removeprefix("torch.")
        return DType(name) if name in {"float32", "float16", "bfloat16"} else None
    folder = Path(path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    for file in files[:1]:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for key, tensor in header.items():
            if key != "__metadata__" and tensor.get("dtype") in SAFETENSORS_DTYPES:
                return SAFETENSORS_DTYPES[tensor["dtype"]]
    return None


def preprocessor_folder(source: models.ModelSource, path: str) -> str:
    """Where the tokenizer or processor lives: beside a config.json file, else the model folder / hub id."""
    return str(Path(source.path).parent) if source.kind == "config" else path


def load_preprocessor(
    head: Head, source: models.ModelSource, path: str, common: dict[str, Any], model: ModelConfig
) -> Any:
    """The tokenizer (text heads) or processor (image, audio, multimodal heads) of the model.

    A random-init model (`model.init=random`) still needs a real tokenizer to turn text into ids: when its folder
    holds none, a ConfigError says where to put one. Non-text processors are optional (None when absent)."""
    import transformers

    folder = preprocessor_folder(source, path)
    local = source.kind != "hub"
    if head.inputs == "text":
        if local and not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
            where = "model.init=random builds the weights, not the vocabulary" if model.init == ModelInit.random else ""
            raise ConfigError(
                f"model {model.name!r} has no tokenizer: {head.description} needs one, and {folder} holds none of "
                f"{', '.join(TOKENIZER_FILES[:2])}{f' ({where})' if where else ''}; put the tokenizer files of the "
                "model this config describes into that folder"
            )
        try:
            return transformers.AutoTokenizer.from_pretrained(folder, **common)
        except Exception as exc:
            raise models.describe_load_failure(source, exc) from exc
    auto = {"image": "AutoImageProcessor", "audio": "AutoFeatureExtractor"}.get(head.inputs, "AutoProcessor")
    try:
        return getattr(transformers, auto).from_pretrained(folder, **common)
    except Exception as exc:  # optional for export: the weights are what is saved
        log.warning("model %r: no %s found in %s (%s)", model.name, auto, folder, str(exc).splitlines()[0][:200])
        return None
