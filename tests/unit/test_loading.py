"""Task-aware loading from the config alone: which head serves which task (capabilities), config overrides, the
checkpoint's dtype, and the placement check. Configs are built in memory; no weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import transformers

from omnirun.config import DType, ModelConfig, ModelType, TaskName
from omnirun.engine import capabilities
from omnirun.engine.hf import prepare
from omnirun.engine.hf.loading import check_placement, dequantized
from omnirun.errors import ConfigError
from omnirun.hardware import HardwarePlan


def bert(arch: str) -> transformers.BertConfig:
    return transformers.BertConfig(architectures=[arch])


GENERATION_TASKS = [TaskName.generate, TaskName.batch, TaskName.chat, TaskName.stream, TaskName.benchmark]


@pytest.mark.parametrize(
    ("config", "head"),
    [
        (transformers.LlamaConfig(architectures=["LlamaForCausalLM"]), "causal-lm"),
        (transformers.GPT2Config(architectures=["GPT2LMHeadModel"]), "causal-lm"),
        (transformers.T5Config(architectures=["T5ForConditionalGeneration"]), "seq2seq"),
        (transformers.BartConfig(architectures=["BartForConditionalGeneration"]), "seq2seq"),
        (transformers.LlamaConfig(architectures=["MyLlamaForCausalLM"]), "causal-lm"),  # remote code: by suffix
        (transformers.LlamaConfig(), "causal-lm"),  # no architectures (a hand-written config): by model_type
        (transformers.T5Config(), "seq2seq"),
    ],
)
@pytest.mark.parametrize("task", GENERATION_TASKS)
def test_generation_models_serve_the_generation_tasks(config: object, head: str, task: TaskName) -> None:
    assert capabilities.check_task(task, config, "m").name == head


@pytest.mark.parametrize(
    ("config", "family"),
    [
        (bert("BertForSequenceClassification"), "classify"),
        (bert("BertForTokenClassification"), "token_classify"),
        (bert("BertForQuestionAnswering"), "qa"),
        (bert("BertForMaskedLM"), "fill_mask"),
        (transformers.ViTConfig(architectures=["ViTForImageClassification"]), "image_classify"),
        (transformers.WhisperConfig(architectures=["WhisperForConditionalGeneration"]), "transcribe"),
        (bert("BertModel"), "embed"),
    ],
)
def test_other_heads_are_refused_for_generation_in_one_line(config: object, family: str) -> None:
    """A BERT checkpoint has a BertLMHeadModel class for its model_type: loading it as a causal LM gave a random
    head that "generated" noise. Its architectures decide, before any weights."""
    arch = config.architectures[0]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        capabilities.check_task(TaskName.generate, config, "/models/x")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("task=generate needs a text-generation model")
    assert arch in message and "'/models/x'" in message
    assert family in message and "task=export" in message
    assert family in capabilities.families_of(config)
    assert capabilities.head_for(family, config) is not None


def test_export_takes_the_checkpoints_own_head() -> None:
    assert capabilities.check_task(TaskName.export, bert("BertForSequenceClassification"), "m").auto_class == (
        "AutoModelForSequenceClassification"
    )
    vit = transformers.ViTConfig(architectures=["ViTForImageClassification"])
    head = capabilities.check_task(TaskName.export, vit, "m")
    assert (head.auto_class, head.inputs) == ("AutoModelForImageClassification", "image")
    assert capabilities.model_class(head) is transformers.AutoModelForImageClassification


def test_every_head_names_a_transformers_class_and_table() -> None:
    from transformers.models.auto import modeling_auto

    for head in (*capabilities.HEADS, capabilities.BASE):
        assert hasattr(transformers, head.auto_class), head
        assert all(hasattr(modeling_auto, table) for table in head.mappings), head


def test_explicit_model_type_picks_the_generation_class() -> None:
    config = transformers.BartConfig(architectures=["BartForConditionalGeneration"])
    causal, seq2seq = (
        capabilities.head_for(capabilities.GENERATE, config, ModelType.causal_lm),
        capabilities.head_for(capabilities.GENERATE, config),
    )
    assert causal is not None and causal.name == "causal-lm"
    assert seq2seq is not None and seq2seq.name == "seq2seq"


def test_unknown_task_family_is_named_after_the_task() -> None:
    """The next tasks (classify, qa, ...) need no table entry when named like their family."""
    assert capabilities.task_family("classify") == "classify"
    config = bert("BertForSequenceClassification")
    assert capabilities.check_task("classify", config, "m").name == "sequence-classification"
    with pytest.raises(ConfigError, match=r"task=qa needs a qa model"):
        capabilities.check_task("qa", config, "m")


# ---------------------------------------------------------------------------------------------- config overrides
def test_config_overrides_are_set_and_typos_named() -> None:
    config = transformers.LlamaConfig()
    prepare.apply_overrides(config, ModelConfig(config_overrides={"attention_dropout": 0.2, "hidden_size": 128}))
    assert (config.attention_dropout, config.hidden_size) == (0.2, 128)
    with pytest.raises(ConfigError) as info:
        prepare.apply_overrides(config, ModelConfig(config_overrides={"hiden_size": 64}))
    assert str(info.value).startswith("model.config_overrides: LlamaConfig has no key 'hiden_size'")
    assert config.hidden_size == 128


def test_num_labels_rebuilds_the_label_maps() -> None:
    config = bert("BertForSequenceClassification")
    prepare.apply_overrides(config, ModelConfig(num_labels=3))
    assert config.num_labels == 3 and config.id2label is not None and len(config.id2label) == 3


def write_safetensors_header(path: Path, dtype: str) -> None:
    header = json.dumps({"__metadata__": {"format": "pt"}, "w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 2]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0\0")


def test_checkpoint_dtype_from_config_then_weights(tmp_path: Path) -> None:
    config = transformers.LlamaConfig()
    config.dtype = "bfloat16"
    assert prepare.checkpoint_dtype(config, str(tmp_path)) == DType.bfloat16
    config.dtype = None
    assert prepare.checkpoint_dtype(config, str(tmp_path)) is None
    write_safetensors_header(tmp_path / "model.safetensors", "F16")
    assert prepare.checkpoint_dtype(config, str(tmp_path)) == DType.float16


# ------------------------------------------------------------------------------------------------ placement check
def plan(**kwargs: object) -> HardwarePlan:
    return HardwarePlan("cpu", "float32", None, 1, device_map="auto", max_memory={"cpu": "1KiB"}, **kwargs)  # type: ignore[arg-type]


def fake_model(device_map: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(hf_device_map=device_map, parameters=lambda: iter(()))


def test_whole_model_on_disk_is_refused_naming_max_memory() -> None:
    with pytest.raises(ConfigError) as info:
        check_placement(fake_model({"": "disk"}), plan())
    assert "hardware.max_memory={'cpu': '1KiB'}" in str(info.value) and "disk" in str(info.value)
    check_placement(fake_model({"model.layers.0": "cpu", "lm_head": "disk"}), plan())  # a partial offload runs


def test_gguf_conversion_asks_for_dense_weights() -> None:
    """Transformers releases that can keep GGUF blocks packed must unpack them for the dense cache."""
    kwargs = dequantized()
    if hasattr(transformers, "GgufConfig"):
        assert kwargs["quantization_config"].dequantize is True
