"""Model resolution (short names, hub ids, folders, GGUF), file hashing, and load-failure messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnirun.engine import TransformersEngine
from omnirun.errors import ModelLoadError


def test_loading_hub_model_offline_fails_with_one_line(tmp_path: Path) -> None:
    engine = TransformersEngine("qwen", cache_dir=str(tmp_path / "hf"))  # an empty HF cache: nothing to find
    with pytest.raises(ModelLoadError) as info:
        engine.load_model()
    message = str(info.value)
    assert "\n" not in message
    assert "'qwen'" in message
    assert "smollm2" in message
    assert not engine.is_loaded


def test_loading_missing_folder_fails_before_transformers(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such model folder"):
        TransformersEngine(str(tmp_path / "nope" / "model")).load_model()


def test_loading_folder_without_model_is_a_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError) as info:
        TransformersEngine(str(tmp_path / "empty")).load_model()
    assert "\n" not in str(info.value)
    assert str(tmp_path / "empty") in str(info.value)


def test_pickle_only_checkpoint_refused_unless_allowed(tiny_gpt2: Path, tmp_path: Path) -> None:
    """allow_pickle=False (the default) loads only safetensors: a folder with just a .bin fails cleanly."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_gpt2, folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        TransformersEngine(str(folder)).load_model()
    assert "\n" not in str(info.value)
    assert "safetensors" in str(info.value)
    with TransformersEngine(str(folder), allow_pickle=True) as engine:
        assert isinstance(engine.infer("hi", do_sample=False, max_new_tokens=3), str)
