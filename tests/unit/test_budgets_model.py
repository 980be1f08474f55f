"""A model that cannot fit is refused before anything is allocated for it: the parameter count comes from the
config on the meta device, `model.num_labels` is checked before the config builds a billion label names, and
the refusal is a one-line ConfigError naming the key, the value, the estimate and what is free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import transformers
from tiny_heads import text_tokenizer

from omnirun import hardware
from omnirun.config import Device, DType, HardwareConfig, ModelConfig, ModelInit, Quantization
from omnirun.engine.hf import loading, prepare
from omnirun.engine.hf.engine import HfEngine
from omnirun.errors import ConfigError


def test_a_billion_labels_are_refused_before_the_config_builds_their_names() -> None:
    config = transformers.BertConfig(hidden_size=32, num_attention_heads=2)
    with pytest.raises(ConfigError, match=r"model.num_labels=1,000,000,000: a head of 1,000,000,000 labels needs ~"):
        prepare.apply_overrides(config, ModelConfig(name="x", num_labels=10**9))
    assert config.num_labels == 2 and len(config.id2label or {}) == 2  # untouched
    with pytest.raises(ConfigError, match=r"model.config_overrides.num_labels=1,000,000,000"):
        prepare.apply_overrides(config, ModelConfig(name="x", config_overrides={"num_labels": 10**9}))
    prepare.apply_overrides(config, ModelConfig(name="x", num_labels=7))
    assert config.num_labels == 7


def test_the_label_check_is_against_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    config = transformers.BertConfig(hidden_size=32, num_attention_heads=2)
    monkeypatch.setattr(hardware, "ram_free_mb", lambda: 1.0)
    with pytest.raises(ConfigError, match=r"model.num_labels=10,000: .*~4 MB .*more than the 1 MB of RAM free"):
        prepare.apply_overrides(config, ModelConfig(name="x", num_labels=10_000))


HUGE = {  # a 78B-parameter decoder (32 layers of 12288), as a config file
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 12288,
    "intermediate_size": 49152,
    "num_hidden_layers": 32,
    "num_attention_heads": 96,
    "num_key_value_heads": 96,
    "vocab_size": 64000,
    "max_position_embeddings": 2048,
}


def test_a_random_init_model_too_big_for_the_machine_is_refused_before_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`model.init=random` on a 78B config: the count comes from a meta-device model, and the refusal comes
    before `from_config` is called anywhere but on the meta device."""
    import torch

    (tmp_path / "config.json").write_text(json.dumps(HUGE))
    text_tokenizer().save_pretrained(tmp_path)
    devices: list[str] = []
    real = transformers.AutoModelForCausalLM.from_config

    def spy(config: Any, **kwargs: Any) -> Any:
        devices.append(str(torch.get_default_device()))
        if devices[-1] != "meta":
            pytest.fail("from_config called off the meta device: the weights would be allocated")
        return real(config, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", spy)
    engine = HfEngine(
        ModelConfig(name=str(tmp_path), init=ModelInit.random), HardwareConfig(device=Device.cpu, dtype=DType.float32)
    )
    with pytest.raises(ConfigError) as caught:
        engine.load_model()
    message = str(caught.value)
    assert "\n" not in message and devices == ["meta"]
    assert message.startswith(f"model.name={str(tmp_path)!r} with model.init=random: its 78,")
    assert "parameters need ~" in message and "MB as float32 weights, more than the" in message
    assert "MB of RAM free; use a smaller model" in message


def plan(device: Device, quantization: Quantization | None = None, device_map: Any = None) -> hardware.HardwarePlan:
    return hardware.HardwarePlan(device, DType.bfloat16, quantization, 1, device_map=device_map)


def test_the_weights_are_checked_where_they_go(monkeypatch: pytest.MonkeyPatch) -> None:
    size = hardware.ModelSize(params=1_000 * hardware.MB)  # 2,000 MB in bf16, 500 MB in int4
    monkeypatch.setattr(hardware, "ram_free_mb", lambda: 1_000.0)
    monkeypatch.setattr(loading, "gpu_free_mb", lambda: 4_000.0)
    pretrained, random = ModelConfig(name="m"), ModelConfig(name="m", init=ModelInit.random)
    with pytest.raises(ConfigError, match=r"model.name='m': .*~2,000 MB as bfloat16 .* 1,000 MB of RAM free.*int4"):
        loading.refuse_oversized(pretrained, size, plan(Device.cpu))
    loading.refuse_oversized(pretrained, size, plan(Device.cpu, Quantization.int4))
    loading.refuse_oversized(pretrained, size, plan(Device.cuda))  # the GPU holds it
    loading.refuse_oversized(pretrained, size, plan(Device.cpu, device_map="auto"))  # accelerate may offload
    with pytest.raises(ConfigError, match=r"with model.init=random: .*of RAM free"):  # built on the CPU first
        loading.refuse_oversized(random, size, plan(Device.cuda))
    monkeypatch.setattr(loading, "gpu_free_mb", lambda: 1_500.0)
    with pytest.raises(ConfigError, match=r"1,500 MB of GPU memory free"):
        loading.refuse_oversized(pretrained, size, plan(Device.cuda))
