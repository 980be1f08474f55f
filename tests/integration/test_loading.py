"""The loading options of Transformers' `from_pretrained` on real tiny models (and the bundled SmolLM2): the task
gate, quantization and its fallback, config overrides, random init, dtype, device_map / max_memory, parameter
counts, save, ONNX export and hub uploads."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

import omnirun.tasks  # noqa: F401  imported before any capsys test: TaskContext.out binds sys.stdout at import
from omnirun.config import Backend, HardwareConfig, ModelConfig, Quantization, TaskName
from omnirun.engine import TransformersEngine
from omnirun.engine.base import ParameterCount
from omnirun.engine.build import build
from omnirun.engine.hf import HfEngine
from omnirun.errors import ConfigError, ModelLoadError, OmnirunError
from omnirun.hardware import HardwareInfo

from clirun import omnirun as run_cli
from tiny_models import build_tokenizer

GREEDY = {"do_sample": False, "max_new_tokens": 6}
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")


@pytest.fixture(scope="module")
def bert_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BertForSequenceClassification (2 labels) with a trained tokenizer."""
    folder = tmp_path_factory.mktemp("bert-cls")
    tokenizer = build_tokenizer()
    labels: dict[str, Any] = {"num_labels": 2}  # a PreTrainedConfig keyword the dataclass signature leaves out
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
        **labels,
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random ViTForImageClassification with an image processor config and no tokenizer."""
    folder = tmp_path_factory.mktemp("vit")
    labels: dict[str, Any] = {"num_labels": 3}  # a PreTrainedConfig keyword the dataclass signature leaves out
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        **labels,
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}})
    )
    return folder


def simulated(bitsandbytes: bool) -> HardwareInfo:
    return HardwareInfo("Simulated CPU", 2, 8 * 1024.0, 6 * 1024.0, bitsandbytes=bitsandbytes, int4_kernels=True)


def engine(path: Path, **hardware: Any) -> HfEngine:
    hw = HardwareConfig(backend=Backend.transformers, **hardware)
    hw.validate()
    return HfEngine(ModelConfig(name=str(path)), hw, info=simulated(bitsandbytes=HAS_BNB))


# ----------------------------------------------------------------------------------------------------- task gate
class TestTaskGate:
    @pytest.mark.parametrize(
        ("model", "arch"),
        [("bert_classifier", "BertForSequenceClassification"), ("vit_classifier", "ViTForImageClassification")],
    )
    def test_generation_refused_before_tokenizer_and_weights(
        self, model: str, arch: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """BERT loaded as BertLMHeadModel with a random head and generated noise; ViT failed with "Couldn't
        instantiate the backend tokenizer". Both are refused from the config, naming what they serve."""
        path = request.getfixturevalue(model)

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError("loaded before the task was checked")

        monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", forbidden)
        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
        for attempt in (TransformersEngine(str(path)).load_model, TransformersEngine(str(path)).load_tokenizer):
            with pytest.raises(ConfigError) as info:
                attempt()
            message = str(info.value)
            assert "\n" not in message and message.startswith("task=generate needs a text-generation model")
            assert arch in message and "task=export" in message
        with pytest.raises(ConfigError, match=arch):
            build(ModelConfig(name=str(path)), HardwareConfig(), task=TaskName.chat)

    def test_cli_exits_2_with_one_line(
        self, bert_classifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert run_cli(tmp_path, f"model.name={bert_classifier}", "input.prompt=hello") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("error: task=generate needs") and "BertForSequenceClassification" in err[0]

    def test_export_loads_the_checkpoints_own_head(self, bert_classifier: Path, vit_classifier: Path) -> None:
        with build(ModelConfig(name=str(bert_classifier)), HardwareConfig(), task=TaskName.export) as e:
            assert isinstance(e, HfEngine)
            assert type(e.model).__name__ == "BertForSequenceClassification"
            assert e.parameters() == ParameterCount(e.model.num_parameters(), e.model.num_parameters())
        with build(ModelConfig(name=str(vit_classifier)), HardwareConfig(), task=TaskName.export) as e:
            assert isinstance(e, HfEngine)
            assert type(e.model).__name__ == "ViTForImageClassification"
            assert isinstance(e, HfEngine) and e.tokenizer is None and e.preprocessor is not None
            with pytest.raises(ConfigError, match="does not generate text"):
                e.infer("hello")

    def test_generation_models_still_load(self, tiny_llama: Path, tiny_t5: Path) -> None:
        for path, cls in ((tiny_llama, "LlamaForCausalLM"), (tiny_t5, "T5ForConditionalGeneration")):
            with build(ModelConfig(name=str(path)), HardwareConfig(), task=TaskName.generate) as e:
                assert isinstance(e, HfEngine)
                assert type(e.model).__name__ == cls


# --------------------------------------------------------------------------------------------- quantization
class TestQuantizationFallback:
    def test_missing_bitsandbytes_loads_unquantized(self, tiny_llama: Path, caplog: pytest.LogCaptureFixture) -> None:
        hw = HardwareConfig(backend=Backend.transformers, quantization=Quantization.int8)
        e = HfEngine(ModelConfig(name=str(tiny_llama)), hw, info=simulated(bitsandbytes=False))
        with caplog.at_level(logging.WARNING), e:
            assert e.plan is not None and e.plan.quantization is None
            assert "bitsandbytes is not installed" in e.plan.reasons["quantization"]
            assert isinstance(e.model.model.layers[0].self_attn.q_proj, torch.nn.Linear)
            assert e.infer("hello", **GREEDY)
        assert any("falls back" in r.getMessage() for r in caplog.records)
        strict = HardwareConfig(backend=Backend.transformers, quantization=Quantization.int8, quantization_strict=True)
        with pytest.raises(ConfigError, match="bitsandbytes"):
            HfEngine(ModelConfig(name=str(tiny_llama)), strict, info=simulated(bitsandbytes=False)).load_model()

    @needs_bnb
    @pytest.mark.parametrize("strict", [False, True])
    def test_failed_quantized_load(self, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, strict: bool) -> None:
        original = transformers.AutoModelForCausalLM.from_pretrained

        def broken_bitsandbytes(*args: Any, **kwargs: Any) -> Any:
            if "quantization_config" in kwargs:
                raise RuntimeError("simulated bitsandbytes failure\nsecond line")
            return original(*args, **kwargs)

        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", broken_bitsandbytes)
        e = engine(tiny_llama, quantization=Quantization.int4, quantization_strict=strict)
        if strict:
            with pytest.raises(ModelLoadError, match="simulated bitsandbytes failure"):
                e.load_model()
            return
        with e:
            assert e.plan is not None and e.plan.quantization is None
            reason = e.plan.reasons["quantization"]
            assert reason.startswith("none: int4 was requested") and "simulated bitsandbytes failure" in reason
            assert "second line" not in reason
            assert e.infer("hello", **GREEDY)


# ----------------------------------------------------------------------------------------------- model config
class TestModelConfig:
    def test_overrides_reach_the_model(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama), config_overrides={"max_position_embeddings": 128}) as e:
            assert e.max_context == 128 and e.model.config.max_position_embeddings == 128
        with pytest.raises(ConfigError, match=r"^model.config_overrides: LlamaConfig has no key 'hiden_size'"):
            TransformersEngine(str(tiny_llama), config_overrides={"hiden_size": 64}).load_model()

    def test_num_labels_gives_a_new_head(self, bert_classifier: Path) -> None:
        with build(ModelConfig(name=str(bert_classifier), num_labels=5), HardwareConfig(), task=TaskName.export) as e:
            assert isinstance(e, HfEngine)
            assert e.model.config.num_labels == 5 and e.model.classifier.out_features == 5

    def test_random_init_from_a_config_file(self, tiny_llama: Path, tmp_path: Path) -> None:
        folder = tmp_path / "arch"
        folder.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_llama / name, folder / name)
        with TransformersEngine(str(tiny_llama)) as pretrained:
            expected = pretrained.parameters()
            reference = pretrained.model.model.embed_tokens.weight.clone()
        for name in (str(folder / "config.json"), str(folder)):
            with TransformersEngine(name, init="random", config_overrides={"initializer_range": 0.5}) as e:
                assert e.plan is not None and e.plan.reasons["weights"].startswith("random")
                assert e.parameters() == expected
                assert not torch.equal(e.model.model.embed_tokens.weight, reference)
                assert isinstance(e.infer("hello", **GREEDY), str)

    def test_random_init_runs_from_the_cli_and_the_manifest_says_so(self, tiny_llama: Path, tmp_path: Path) -> None:
        folder = tmp_path / "arch"
        folder.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_llama / name, folder / name)
        args = [f"model.name={folder / 'config.json'}", "model.init=random", "input.prompt=hello"]
        assert run_cli(tmp_path / "runs", *args, "generation.max_new_tokens=2") == 0
        (manifest,) = (tmp_path / "runs").rglob("manifest.json")
        plan = json.loads(manifest.read_text())["plan"]
        assert plan["reasons"]["weights"].startswith("random") and plan["batch_size"] >= 1

    def test_random_init_needs_a_tokenizer_and_pretrained_needs_weights(self, tiny_llama: Path, tmp_path: Path) -> None:
        shutil.copy(tiny_llama / "config.json", tmp_path / "config.json")
        with pytest.raises(ConfigError, match=r"has no tokenizer: .*put the tokenizer files") as info:
            TransformersEngine(str(tmp_path), init="random").load_model()
        assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(ConfigError, match="model.init=random"):
            TransformersEngine(str(tmp_path / "config.json")).load_model()


# ------------------------------------------------------------------------------------ dtype, device_map, memory
class TestPlacement:
    def test_dtype_checkpoint_loads_the_stored_dtype(self, tiny_llama: Path, tmp_path: Path) -> None:
        with TransformersEngine(str(tiny_llama), dtype="bfloat16") as e:
            e.save(tmp_path / "bf16")
        with TransformersEngine(str(tmp_path / "bf16"), dtype="checkpoint") as e:
            assert e.plan is not None and e.plan.dtype == "bfloat16" and e.model.dtype == torch.bfloat16
            assert "checkpoint's own dtype" in e.plan.reasons["dtype"]
        with TransformersEngine(str(tmp_path / "bf16")) as e:
            assert e.plan is not None and e.plan.dtype == "float32"
            assert "planner's choice" in e.plan.reasons["dtype"] and "stored in bfloat16" in e.plan.reasons["dtype"]

    def test_device_map_cpu_loads_and_infers(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama), device_map="cpu") as e:
            assert e.plan is not None and e.plan.device_map == {"": "cpu"}
            assert {p.device.type for p in e.model.parameters()} == {"cpu"}
            assert e.infer("hello", **GREEDY) == TransformersEngine(str(tiny_llama)).load_model().infer(
                "hello", **GREEDY
            )

    def test_max_memory_with_no_room_is_refused_at_load(self, tiny_llama: Path) -> None:
        """accelerate put the whole model on disk; it loaded, then infer crashed: "Cannot copy out of meta"."""
        e = TransformersEngine(str(tiny_llama), device_map="auto", max_memory={"cpu": "1KiB"})
        with pytest.raises(ConfigError) as info:
            e.load_model()
        message = str(info.value)
        assert "\n" not in message and "hardware.max_memory" in message and "remove hardware.max_memory" in message
        assert not e.is_loaded


# ------------------------------------------------------------------------------------------------ save, export
class TestSaveAndExport:
    def test_save_reloads_to_the_same_model(self, tiny_llama: Path, tmp_path: Path) -> None:
        with TransformersEngine(str(tiny_llama)) as e:
            saved = e.save(tmp_path / "out")
            expected = e.infer("hello world", **GREEDY)
            count = e.parameters()
        assert count is not None
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(saved.files)
        with TransformersEngine(str(saved.path)) as again:
            assert again.infer("hello world", **GREEDY) == expected
            assert again.parameters() == count == ParameterCount(count.total, count.total)
            assert again.has_chat_template()

    @needs_bnb
    def test_quantized_model_saves_quantized(self, tiny_llama: Path, tmp_path: Path) -> None:
        import bitsandbytes as bnb

        with engine(tiny_llama, quantization=Quantization.int8) as e:
            count = e.parameters()
            assert count is not None and count.trainable is not None and count.trainable < count.total
            e.save(tmp_path / "int8")
        with TransformersEngine(str(tmp_path / "int8")) as again:
            assert isinstance(again.model.model.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)

    @pytest.mark.skipif(not HAS_ONNX, reason="the onnx extra is not installed")
    def test_onnx_export_matches_torch(self, tiny_llama: Path, tmp_path: Path) -> None:
        import numpy as np
        import onnxruntime

        with TransformersEngine(str(tiny_llama)) as e:
            saved = e.export_onnx(tmp_path / "onnx")
            ids = e.tokenizer(["hello world, one two three"])["input_ids"]
            expected = e.argmax_next(ids[0])
        assert {"model.onnx", "config.json", "tokenizer.json"} <= set(saved.files)
        assert saved.max_abs_diff is not None and saved.max_abs_diff < 1e-4
        session = onnxruntime.InferenceSession(str(saved.path / "model.onnx"))
        feed = {"input_ids": np.array(ids), "attention_mask": np.ones_like(np.array(ids))}
        assert session.run(None, feed)[0][0].argmax(-1).tolist() == expected

    def test_onnx_refuses_encoder_decoder_in_one_line(self, tiny_t5: Path, tmp_path: Path) -> None:
        with TransformersEngine(str(tiny_t5)) as e, pytest.raises(ConfigError, match="export.format=safetensors"):
            e.export_onnx(tmp_path / "t5")

    def test_push_to_hub_offline_is_one_line(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama)) as e, pytest.raises(OmnirunError) as info:
            e.push_to_hub("someone/omnirun-test-model")
        message = str(info.value)
        assert "\n" not in message and "'someone/omnirun-test-model'" in message and "network" in message

    def test_not_loaded(self, tiny_llama: Path) -> None:
        e = TransformersEngine(str(tiny_llama))
        assert e.parameters() is None
        with pytest.raises(RuntimeError, match="load_model"):
            e.save("unused")


# ----------------------------------------------------------------------------------------- the bundled SmolLM2
@pytest.mark.slow
class TestBundled:
    @needs_bnb
    @pytest.mark.parametrize("quantization", ["int8", "int4"])
    def test_quantized_bundled_model_loads_and_answers(self, quantization: str) -> None:
        """Its dense cache kept `quantization_config: gguf`: "quantized with GgufConfig but you are passing a
        BitsAndBytesConfig"."""
        import bitsandbytes as bnb

        layer = bnb.nn.Linear8bitLt if quantization == "int8" else bnb.nn.Linear4bit
        with TransformersEngine("smollm2", quantization=quantization) as e:
            assert e.plan is not None and e.plan.quantization == quantization
            assert isinstance(e.model.model.layers[0].self_attn.q_proj, layer)
            answer = e.chat([{"role": "user", "content": "What is the capital of France?"}], **GREEDY)
            assert "Paris" in answer

    def test_fp16_load_prints_no_gguf_warning(self, capfd: pytest.CaptureFixture[str]) -> None:
        with TransformersEngine("smollm2", dtype="float16") as e:
            assert e.model.dtype == torch.float16
            assert "quantization_config" not in e.model.config.to_dict()
        assert "GGUF" not in capfd.readouterr().err

    def test_bundled_model_saves(self, smollm2_engine: TransformersEngine, tmp_path: Path) -> None:
        saved = smollm2_engine.save(tmp_path / "smollm2")
        config = json.loads((saved.path / "config.json").read_text())
        assert "quantization_config" not in config
        ids = smollm2_engine.tokenizer("The capital of France is")["input_ids"]
        with TransformersEngine(str(saved.path)) as again:
            assert again.argmax_next(ids) == smollm2_engine.argmax_next(ids)
            assert again.parameters() == smollm2_engine.parameters()
