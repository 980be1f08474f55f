"""The extension seams: backends and tasks found through entry points, their specs, and the one-line errors
for what is not installed or does not load."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from omnirun import hardware, plugins
from omnirun.config import HardwareConfig, ModelConfig, RunConfig, TaskConfig
from omnirun.engine.build import build
from omnirun.engine.null import NullEngine
from omnirun.errors import ConfigError
from omnirun.hardware import HardwareInfo
from omnirun.plugins import BackendSpec, Capability, TaskSpec
from omnirun.task_config import check

BUILT_IN_BACKENDS = {"transformers", "llama.cpp", "onnxruntime", "diffusers"}


def machine() -> HardwareInfo:
    return HardwareInfo("Simulated CPU", 8, 32 * 1024.0, 24 * 1024.0, (), llama_cpp=True, int4_kernels=True)


def test_built_in_backends_and_tasks_register_through_entry_points() -> None:
    from importlib.metadata import entry_points

    assert {ep.name for ep in entry_points(group=plugins.BACKENDS_GROUP)} >= BUILT_IN_BACKENDS
    assert set(plugins.backends()) >= BUILT_IN_BACKENDS
    assert {"generate", "chat", "embed", "qa", "image", "export"} <= set(plugins.tasks())
    for name, spec in plugins.tasks().items():
        assert spec.name == name and callable(spec.run)


def test_unknown_names_are_one_line_errors_listing_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match="hardware.backend must be auto or an installed backend") as err:
        HardwareConfig(backend="tensorrt-llm").validate()
    assert "transformers" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="task.name must be an installed task") as err:
        TaskConfig(name="summarize").validate()
    assert "generate" in str(err.value)


def test_the_core_names_no_backend() -> None:
    """No backend's name in the modules that choose and build backends (each backend's folder knows itself)."""
    from pathlib import Path

    import omnirun

    root = Path(omnirun.__file__).parent
    core = [root / "engine" / "build.py", *(p for p in (root / "hardware").glob("*.py") if p.name != "detect.py")]
    for path in core:
        text = path.read_text()
        for name in ("llama.cpp", "llama_cpp", "onnxruntime", "diffusers", '"transformers"'):
            assert name not in text, f"{path.name} names {name}"


def test_a_broken_plugin_does_not_take_the_others_down(monkeypatch: pytest.MonkeyPatch) -> None:
    real = plugins.entry_points

    def with_broken(group: str) -> list[EntryPoint]:
        broken = EntryPoint("broken", "no_such_module_anywhere:SPEC", group)
        return [*real(group=group), broken]

    monkeypatch.setattr(plugins, "entry_points", with_broken)
    plugins.backends.cache_clear()
    try:
        assert "transformers" in plugins.backends()
        with pytest.raises(ConfigError, match="broken = no_such_module_anywhere:SPEC failed to load"):
            plugins.backend("broken")
    finally:
        plugins.backends.cache_clear()


@dataclass
class WordsConfig(TaskConfig):
    min_words: int = 1
    """A plugin task's own option."""

    def check_options(self) -> None:
        check([(self.min_words >= 1, "min_words", "must be >= 1", self.min_words)])


def test_a_tasks_own_options_are_its_config_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's options are a TaskConfig subclass: composed under task=<it>, refused under any other task."""
    from hydra.core.config_store import ConfigStore

    from omnirun.cli import preflight
    from omnirun.confstore import register_tasks

    spec = TaskSpec("demo", run=lambda job: None, needs=None, config=WordsConfig)  # type: ignore[arg-type,return-value]
    monkeypatch.setitem(plugins.tasks(), "demo", spec)
    register_tasks(ConfigStore.instance())
    cfg = preflight.to_run_config(preflight.preflight(["task=demo", "task.min_words=3"]))
    assert isinstance(cfg.task, WordsConfig) and cfg.task.min_words == 3
    with pytest.raises(ConfigError, match="task.min_words must be >= 1, got 0"):
        preflight.preflight(["task=demo", "task.min_words=0"])
    with pytest.raises(ConfigError, match="unknown config key 'task.min_words' for task=generate.*task=demo"):
        preflight.preflight(["task.min_words=3"])
    with pytest.raises(ConfigError, match="task=demo takes WordsConfig options, not TaskConfig"):
        TaskConfig(name="demo").validate()


def test_a_task_that_needs_no_model_gets_the_null_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TaskSpec("nomodel", run=lambda job: None, needs=None)  # type: ignore[arg-type,return-value]
    monkeypatch.setitem(plugins.tasks(), "nomodel", spec)
    engine = build(ModelConfig(name="/does/not/exist"), HardwareConfig(), task="nomodel")
    assert isinstance(engine, NullEngine) and engine.plan is not None
    assert "loads no model" in engine.plan.reasons["backend"]
    RunConfig(task=TaskConfig(name="nomodel")).validate()


def test_auto_weighs_every_registered_backend_by_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new backend changes `auto` without an edit in the core: here one that claims every request."""

    def never(request: Any) -> str | None:
        return "it never serves"

    keen = BackendSpec(
        "keen",
        factory=NullEngine,
        capabilities=frozenset({Capability.generate}),
        auto_problem=lambda r: None,
        auto_reason="keen: always",
        auto_priority=99,
    )
    shy = BackendSpec(
        "shy",
        factory=NullEngine,
        capabilities=frozenset({Capability.generate}),
        problem=never,
        auto_problem=never,
        auto_priority=98,
    )
    monkeypatch.setitem(plugins.backends(), "shy", shy)
    placement = hardware.place(HardwareConfig(), machine(), gguf=False)
    assert placement.backend != "shy" and "shy not used (it never serves)" in placement.backend_reason
    monkeypatch.setitem(plugins.backends(), "keen", keen)
    assert hardware.place(HardwareConfig(), machine(), gguf=False).backend == "keen"
    with pytest.raises(ConfigError, match="hardware.backend=shy: it never serves; use hardware.backend=auto"):
        hardware.place(HardwareConfig(backend="shy"), machine(), gguf=False)
    analyze = hardware.place(HardwareConfig(), machine(), gguf=False, needs=Capability.analyze, task="embed")
    assert analyze.backend == "transformers" and "keen not used (task=embed needs" in analyze.backend_reason


def test_a_model_option_a_backend_would_ignore_is_refused_or_passed_over() -> None:
    """model.config_overrides (and num_labels, init, attn_implementation) act only on Transformers: `auto`
    leaves llama.cpp for them, and asking for llama.cpp with one is refused, naming the option."""
    model = ModelConfig(config_overrides={"max_position_embeddings": 4096})
    placement = hardware.place(HardwareConfig(), machine(), gguf=True, model=model)
    assert placement.backend == "transformers"
    assert "llama.cpp not used (model.config_overrides set, which llama.cpp does not honour)" in (
        placement.backend_reason
    )
    assert hardware.place(HardwareConfig(), machine(), gguf=True, model=ModelConfig()).backend == "llama.cpp"
    with pytest.raises(ConfigError, match=r"hardware.backend=llama.cpp: model.num_labels set, which llama.cpp"):
        hardware.place(HardwareConfig(backend="llama.cpp"), machine(), gguf=True, model=ModelConfig(num_labels=3))


def test_config_overrides_from_the_command_line_compose() -> None:
    """OmegaConf cannot merge a mapping into an optional dict that is null: the README's own example failed."""
    from omnirun.cli import preflight

    overrides = "model.config_overrides={max_position_embeddings: 4096, rope_scaling: {rope_type: linear, factor: 2.0}}"
    cfg = preflight.to_run_config(preflight.preflight([overrides]))
    assert cfg.model.config_overrides == {
        "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
    }
    with pytest.raises(ConfigError, match="model.config_overrides must be a mapping"):
        preflight.preflight(["model.config_overrides=[1, 2]"])
