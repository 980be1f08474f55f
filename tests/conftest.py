"""Shared fixtures: an isolated offline environment, tiny local models, and the real bundled SmolLM2."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import tiny_models` from any test module

from tiny_models import build_tiny

if TYPE_CHECKING:
    from omnirun.engine import TransformersEngine

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported; conftest is imported before any
# test module, so setting the variables here (as well as in the fixture below) makes them take effect.
os.environ.update(OFFLINE_ENV)
# One torch thread unless the caller says otherwise (here and in the subprocesses tests start): the tiny
# models gain nothing from more, and torch's spinning OpenMP threads slow down by 10-80x when another
# process is busy on the same cores, which made the suite's runtime depend on the neighbours.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def config_schema() -> None:
    """The typed schema in Hydra's ConfigStore, as the CLI registers it before composing."""
    from omnirun.confstore import register_configs

    register_configs()


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the omnirun cache (GGUF dense copies, hash memos) at a session temp dir, and stay offline."""
    cache = tmp_path_factory.mktemp("omnirun-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMNIRUN_CACHE", str(cache))
        for key, value in OFFLINE_ENV.items():
            mp.setenv(key, value)
        yield cache


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random LlamaForCausalLM whose tokenizer has a chat template."""
    return build_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random GPT2LMHeadModel; its tokenizer has no chat template."""
    return build_tiny("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2+2-layer random T5ForConditionalGeneration (seq2seq)."""
    return build_tiny("t5", tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def smollm2_engine(isolated_env: Path) -> Iterator[TransformersEngine]:
    """The real bundled SmolLM2-135M-Instruct, loaded once per session (the first load converts its GGUF)."""
    from omnirun.engine import TransformersEngine  # imported late: after the offline variables are set

    engine = TransformersEngine("smollm2").load_model()
    yield engine
    engine.unload_model()
