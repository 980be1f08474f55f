"""Every shipped config option composes into a valid RunConfig; bad keys and values fail with one clear line."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from omnirun.cli import preflight as cli
from omnirun.config import GenerationConfig, RunConfig, TaskConfig
from omnirun.errors import ConfigError
from omnirun.task_config import GenerateConfig


def composed(*overrides: str) -> RunConfig:
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        return cli.to_run_config(compose(config_name="config", overrides=list(overrides)))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in cli.GROUPS for o in cli.group_options(g)], ids=lambda x: str(x)
)
def test_every_shipped_option_composes(group: str, option: str) -> None:
    cfg = composed(f"{group}={option}")
    assert isinstance(cfg, RunConfig)


def test_defaults_follow_the_seed_table() -> None:
    cfg = composed()
    g = cfg.generation
    assert (g.max_new_tokens, g.temperature, g.top_p, g.top_k, g.repetition_penalty, g.do_sample) == (
        100,
        0.7,
        0.9,
        50,
        1.0,
        True,
    )
    assert cfg.model.name == "smollm2"
    assert cfg.task.name == "generate"
    assert cfg.hardware.device == "auto"
    assert cfg.model.trust_remote_code is False
    assert cfg.model.allow_pickle is False
    assert cfg.output.root == "outputs"


def test_group_options_set_what_they_promise() -> None:
    assert composed("generation=greedy").generation.do_sample is False
    beam = composed("generation=beam").generation
    assert beam.num_beams > 1 and beam.do_sample is False
    assert composed("hardware=cuda-int8").hardware.quantization == "int8"
    assert composed("hardware=cuda-int4").hardware.quantization == "int4"
    assert composed("hardware=multi-gpu").hardware.device_map == "auto"
    assert composed("task=batch").task.batch_size == "auto"
    assert composed("model=t5-small").model.model_type == "seq2seq"


def test_public_keys_are_overridable() -> None:
    cfg = composed(
        "input.path=data.jsonl",
        "input.split=test",
        "input.field=question",
        "input.limit=5",
        "output.root=/tmp/x",
        "seed=7",
        "task.batch_size=4",
        "hardware.device=cpu",
        "hardware.dtype=bfloat16",
        "hardware.quantization=int8",
        "generation.temperature=0.2",
        "generation.num_beams=2",
        "generation.no_repeat_ngram_size=3",
        "generation.length_penalty=0.5",
        "generation.early_stopping=true",
    )
    assert cfg.input.path == "data.jsonl" and cfg.input.limit == 5 and cfg.seed == 7
    assert cfg.task.batch_size == 4 and cfg.hardware.dtype == "bfloat16"
    assert cfg.generation.num_beams == 2 and cfg.generation.early_stopping is True


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("generation.temperature=-0.5", "generation.temperature must be between 0.0 and 2.0, got -0.5"),
        ("generation.top_p=0", "generation.top_p must be in (0, 1], got 0.0"),
        ("generation.top_p=1.5", "generation.top_p must be in (0, 1]"),
        ("generation.max_new_tokens=0", "generation.max_new_tokens must be >= 1, got 0"),
        ("generation.top_k=-1", "generation.top_k must be >= 0"),
        ("generation.num_beams=0", "generation.num_beams must be >= 1"),
        ("generation.repetition_penalty=0", "generation.repetition_penalty must be > 0"),
        ("generation.min_new_tokens=500", "generation.min_new_tokens must be between 0 and max_new_tokens"),
        ("task.batch_size=0", "task.batch_size must be a positive integer or 'auto', got 0"),
        ("task.batch_size=big", "task.batch_size must be a positive integer or 'auto'"),
        ("input.limit=0", "input.limit must be >= 1"),
        ("model.model_type=decoder", "model.model_type must be one of causal-lm, seq2seq"),
        ("model.attn_implementation=fast", "model.attn_implementation must be one of"),
        ("hardware.device_map=everywhere", "hardware.device_map must be one of"),
        ("hardware.num_threads=0", "hardware.num_threads must be between 1 and"),
    ],
)
def test_bad_values_name_the_key_and_value(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        composed(override)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_combinations() -> None:
    with pytest.raises(ConfigError, match="beam search"):
        composed("task=stream", "generation.num_beams=3")
    with pytest.raises(ConfigError, match="input.path and input.dataset"):
        composed("input.path=a.jsonl", "input.dataset=b")
    with pytest.raises(ConfigError, match="do_sample=false"):
        composed("generation.temperature=0")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["generation.temprature=0.5"], "unknown config key 'generation.temprature'; valid keys under generation:"),
        (["modle=qwen"], "unknown config key 'modle'; valid keys: model, hardware"),
        (["model=foo"], "model=foo is not an option; choose one of: "),
        (
            ["task=dance"],
            "task=dance is not an option; choose one of: audio_classify, batch, benchmark, caption, chat, classify",
        ),
        (["hardware.device=tpu"], "hardware.device: Invalid value 'tpu', expected one of [auto, cpu, cuda, mps]"),
        (["generation.max_new_tokens=abc"], "generation.max_new_tokens: Value 'abc'"),
        (["generation.top_p=0.5,7"], "generation.top_p must be in (0, 1], got 7.0"),
        (["seed=x=y"], "cannot parse overrides"),
    ],
)
def test_preflight_explains_composition_errors(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        cli.preflight(overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_preflight_accepts_sweeps_and_hydra_overrides() -> None:
    cli.preflight(["generation.temperature=0.2,0.7", "task.batch_size=1,4", "hydra.job.chdir=false"])


def test_generation_overrides_validate() -> None:
    g = GenerationConfig().with_overrides({"max_new_tokens": 5}, prefix="")
    assert g.max_new_tokens == 5
    with pytest.raises(ValueError, match="unknown generation parameter"):
        GenerationConfig().with_overrides({"max_tokens": 5})
    with pytest.raises(ValueError, match="temperature must be between 0.0 and 2.0, got -1"):
        GenerationConfig().with_overrides({"temperature": -1}, prefix="")


def test_task_batch_size_accepts_auto_and_ints() -> None:
    GenerateConfig(batch_size="auto").validate()
    GenerateConfig(batch_size=8).validate()
    with pytest.raises(ConfigError):
        GenerateConfig(batch_size=True).validate()


def test_a_base_task_config_becomes_its_task_class() -> None:
    """RunConfig() holds a base TaskConfig; validating it gives task=generate its own options (task.score)."""
    cfg = RunConfig(task=TaskConfig(batch_size=4))
    cfg.validate()
    assert isinstance(cfg.task, GenerateConfig) and cfg.task.batch_size == 4 and cfg.task.score == []
    with pytest.raises(ConfigError, match="task.score"):
        RunConfig(task=GenerateConfig(score=["exact_matc"])).validate()


def test_max_memory_in_the_readme_spelling() -> None:
    from omnirun.cli.preflight import preflight, to_run_config

    cfg = to_run_config(preflight(["hardware.max_memory={0: 20GiB, cpu: 60GiB}"]))
    assert cfg.hardware.max_memory == {"0": "20GiB", "cpu": "60GiB"}
