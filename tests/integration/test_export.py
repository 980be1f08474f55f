"""task=export: the model written out as safetensors (or ONNX), loadable again with the same answers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from omnirun.engine import TransformersEngine

from clirun import omnirun, only_run_dir


def test_export_safetensors_round_trips(tmp_path: Path, tiny_llama: Path) -> None:
    target = tmp_path / "exported"
    assert omnirun(tmp_path / "out", f"model.name={tiny_llama}", "task=export", f"export.path={target}") == 0
    run_dir = only_run_dir(tmp_path / "out")
    record = json.loads((run_dir / "export.json").read_text())
    assert record["format"] == "safetensors" and "model.safetensors" in record["files"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert metrics["status"] == "completed" and metrics["num_parameters"] > 0
    assert manifest["model"]["num_parameters"] == metrics["num_parameters"]
    assert not list(target.glob("*.bin"))  # safetensors only
    with TransformersEngine(str(tiny_llama)) as a, TransformersEngine(str(target)) as b:
        prompts = ["the quick brown fox", "hello world"]
        assert a.infer(prompts, do_sample=False, max_new_tokens=5) == b.infer(
            prompts, do_sample=False, max_new_tokens=5
        )


def test_export_defaults_into_the_run_directory(tmp_path: Path, tiny_gpt2: Path) -> None:
    assert omnirun(tmp_path, f"model.name={tiny_gpt2}", "task=export") == 0
    assert (only_run_dir(tmp_path) / "export" / "config.json").is_file()


def test_push_to_hub_offline_is_one_line(tmp_path: Path, tiny_gpt2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = omnirun(tmp_path, f"model.name={tiny_gpt2}", "task=export", "export.push_to_hub=someone/some-model")
    assert code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "someone/some-model" in err[0]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the onnx extra is not installed")
def test_export_onnx(tmp_path: Path, tiny_llama: Path) -> None:
    target = tmp_path / "onnx"
    args = [f"model.name={tiny_llama}", "task=export", "export.format=onnx", f"export.path={target}"]
    assert omnirun(tmp_path / "out", *args) == 0
    assert list(target.glob("*.onnx"))


@pytest.mark.slow
def test_the_bundled_model_exports_as_safetensors(tmp_path: Path) -> None:
    target = tmp_path / "smollm2"
    assert (
        omnirun(
            tmp_path / "out", "model=smollm2", "hardware.backend=transformers", "task=export", f"export.path={target}"
        )
        == 0
    )
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF's, which made the cache unsaveable and unquantizable
