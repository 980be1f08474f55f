"""The engine document's Python API as it is written there: `from omnirun import TransformersEngine, ...`, the
document's keywords and its usage examples (with the bundled model where the document names a hub model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import omnirun
from omnirun.errors import ConfigError

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def test_the_documents_names_import_from_omnirun() -> None:
    from omnirun import DiffusersEngine, InferenceEngine, LlamaCppEngine, OptimumEngine, TransformersEngine

    for facade in (LlamaCppEngine, OptimumEngine, DiffusersEngine):
        assert facade.backend in omnirun.plugins.backends()
    assert TransformersEngine.__name__ == "TransformersEngine" and InferenceEngine is omnirun.engine.base.Engine
    with pytest.raises(AttributeError):
        _ = omnirun.NoSuchEngine


@pytest.mark.slow
def test_the_documents_full_flow_runs_as_written() -> None:
    """使用範例 / 完整流程, 串流生成範例 and 對話範例, with the bundled SmolLM2 for "gpt2" and Qwen."""
    from omnirun import TransformersEngine

    engine = TransformersEngine("smollm2")
    engine.load_model()
    result = engine.infer("Once upon a time", max_new_tokens=8, temperature=0.8, top_p=0.9, top_k=50)
    assert isinstance(result, str) and result
    pieces = list(engine.stream("The future of AI is", max_new_tokens=6))
    assert pieces and all(isinstance(p, str) for p in pieces)
    messages = [
        {"role": "system", "content": "你是一個有幫助的 AI 助手。"},
        {"role": "user", "content": "什麼是深度學習？"},
    ]
    response = engine.chat(messages, max_new_tokens=6, temperature=0.7)
    assert isinstance(response, str)
    batch = engine.infer(["Question 1?", "Question 2?", "Question 3?"], max_new_tokens=4)
    assert isinstance(batch, list) and len(batch) == 3
    engine.unload_model()
    assert not engine.is_loaded

    manual = TransformersEngine("smollm2", auto_config=False, device="cpu", dtype="float32", quantization=None)
    with manual:
        assert manual.plan is not None and (manual.plan.device, manual.plan.dtype) == ("cpu", "float32")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
def test_llama_cpp_engine_with_the_documents_keywords() -> None:
    from omnirun import LlamaCppEngine

    with LlamaCppEngine() as engine:
        assert engine.plan is not None and engine.plan.backend == "llama.cpp"
        assert isinstance(engine.infer("Once upon a time", max_new_tokens=4, do_sample=False), str)
        assert "".join(engine.stream("Hello", max_new_tokens=4, do_sample=False))
    with pytest.raises(ConfigError, match="hardware.backend=llama.cpp"):
        LlamaCppEngine("smollm2", dtype="bfloat16")


def test_facades_refuse_what_their_backend_cannot_serve(tiny_llama: Path) -> None:
    from omnirun import DiffusersEngine, LlamaCppEngine

    with pytest.raises(ConfigError, match="not a GGUF file"):
        LlamaCppEngine(str(tiny_llama))
    with pytest.raises(ConfigError, match="diffusers pipeline"):
        DiffusersEngine(str(tiny_llama))
    with pytest.raises(ValueError, match="device"):
        LlamaCppEngine(device="tpu")
