"""Compose and validate the config before anything runs: every override, every value of a sweep; explain a
composition error in one line that names the key, the rule and the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnirun.config import RunConfig, TaskConfig
from omnirun.errors import ConfigError, first_line

CONF_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")
GROUPS = ("model", "hardware", "generation", "task", "tracking", "cluster")


def preflight(overrides: list[str]) -> Any:
    """Compose and validate the config for every value of every override; raise ConfigError on the first
    problem, phrased for the user. Returns the composed tree of the first combination (the run itself when
    nothing sweeps)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    check_hydra_overrides(overrides)
    mine = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(mine)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse overrides: {first_line(str(exc))}") from None
    tasks = chosen_tasks(parsed)
    for override in parsed:
        for task in tasks if override.key_or_group.startswith("task.") else tasks[:1]:
            check_override(override, task)
    base = [o.input_line if not o.is_sweep_override() else next(iter(sweep_values(o))) for o in parsed]
    trials = [base]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            trials += [[*base[:i], value, *base[i + 1 :]] for value in list(sweep_values(o))[1:]]
    composed = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for trial in trials:
            try:
                composed.append(compose(config_name="config", overrides=[str(o) for o in trial]))
                to_run_config(composed[-1])
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(explain(exc)) from None
    return composed[0]


INSTANTIATION_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
BOOLEAN_WORDS = ("true", "false")


def check_hydra_overrides(overrides: list[str]) -> None:
    """Nothing from the command line is instantiated as code: no `_target_` anywhere, no Hydra callbacks, and
    launchers only from conf/hydra/launcher."""
    for text in overrides:
        key = text.lstrip("+~").split("=", 1)[0]
        if any(marker in key for marker in INSTANTIATION_KEYS):
            raise ConfigError(f"override {key!r}: setting {key.rsplit('.', 1)[-1]} from the command line is refused")
        if key.startswith(("hydra.callbacks", "hydra/callbacks")):
            raise ConfigError(f"override {key!r}: Hydra callbacks cannot be set from the command line")
        if key == "hydra/launcher" and "=" in text:
            value = text.split("=", 1)[1]
            allowed = [*group_options("hydra/launcher"), "basic"]
            if value not in allowed:
                raise ConfigError(f"hydra/launcher={value} is not an option; choose one of: {', '.join(allowed)}")


def chosen_tasks(parsed: list[Any]) -> list[str]:
    """The tasks the overrides choose (`task=x`, or each value of a `task=x,y` sweep); the default otherwise."""
    for override in parsed:
        if override.key_or_group == "task":
            values = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
            return [str(v) for v in values]
    return [str(TaskConfig().name)]


def task_schema(task: str) -> type[TaskConfig]:
    """The `task.*` schema of the installed task `task` (TaskConfig for an unknown one: Hydra names it later)."""
    from omnirun import plugins

    spec = plugins.tasks().get(task)
    return (spec.config if spec is not None else None) or TaskConfig


def check_override(override: Any, task: str = "generate") -> None:
    """The key exists in the schema, the `task.*` keys in the chosen task's (a `+key` Hydra would add and omnirun
    ignore is a typo like any other), and a boolean is written `true` or `false` (not `on`, `yes` or `1`)."""
    key = override.key_or_group
    if "/" in key or (key.split(".")[0] in GROUPS and "." not in key):
        return  # a config group choice: Hydra checks the option
    kind = field_kind(key, task_schema(task))
    if kind is None and key.startswith("task."):
        raise ConfigError(f"unknown config key '{key}' for task={task}; {task_key_hint(key, task)}")
    if kind is None:
        raise ConfigError(f"unknown config key '{key}'; {valid_keys_hint(key)}")
    if kind == "bool" and not override.is_delete():
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            if value is not None and str(value).lower() not in BOOLEAN_WORDS:
                raise ConfigError(f"{key} must be true or false, got {value!r}")


def field_kind(key: str, task: type[TaskConfig] = TaskConfig) -> str | None:
    """`bool`, `value` (any other field, or a place under a free-form mapping field) or None (no such key);
    `task.*` keys against the schema `task`."""
    import dataclasses
    import typing

    node: Any = RunConfig
    for i, part in enumerate(key.split(".")):
        if not dataclasses.is_dataclass(node):
            return "value"  # inside a mapping-typed field (device_map, max_memory): free-form
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = task if node is RunConfig and part == "task" else hints[part]
        if i == len(key.split(".")) - 1:
            return "bool" if node is bool or node == (bool | None) else "value"
    return "value"


def sweep_values(override: Any) -> Any:
    key = override.get_key_element()
    return (f"{key}={v}" for v in override.sweep_string_iterator())


def to_run_config(raw: Any) -> RunConfig:
    """The raw tree → a validated RunConfig; no OmegaConf object passes below this point."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(raw)
    assert isinstance(cfg, RunConfig)
    return cfg.validate()


def explain(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, the rule, the value and the way out."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, ConfigKeyError | ValidationError):
        cause = cause.__cause__
    text = str(exc)
    if "Could not find '" in text:  # an unknown option of a config group
        missing = text.split("Could not find '", 1)[1].split("'", 1)[0]
        group, _, option = missing.rpartition("/")
        if group in GROUPS:
            return f"{group}={option} is not an option; choose one of: {', '.join(group_options(group))}"
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) or "No match in the defaults list" in text:
        key = getattr(cause, "full_key", None) or (text.split("'", 2)[1] if "'" in text else "?")
        return f"unknown config key '{key}'; {valid_keys_hint(str(key))}"
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "?")
        return f"{key}: {first_line(str(getattr(cause, 'msg', cause)))}"
    return first_line(text)


def task_key_hint(key: str, task: str) -> str:
    """The keys `task=<task>` has, and the tasks that have `key`."""
    import dataclasses

    from omnirun import plugins

    names = ", ".join(f.name for f in dataclasses.fields(task_schema(task)))
    field = key.split(".")[1]
    owners = [n for n in plugins.tasks() if field in {f.name for f in dataclasses.fields(task_schema(n))}]
    where = f"; {key} is an option of task={', task='.join(owners)}" if owners else ""
    return f"valid keys under task for task={task}: {names}{where}"


def valid_keys_hint(key: str) -> str:
    """The keys valid where `key` was typed: under its deepest existing parent group, else at the top."""
    import dataclasses

    node: Any = RunConfig()
    prefix: list[str] = []
    for part in key.split(".")[:-1]:
        child = getattr(node, part, None)
        if not dataclasses.is_dataclass(child):
            break
        node, prefix = child, [*prefix, part]
    names = ", ".join(f.name for f in dataclasses.fields(node))
    return f"valid keys under {'.'.join(prefix)}: {names}" if prefix else f"valid keys: {names}"


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files; for `task`, every installed task (omnirun.plugins)."""
    found = {p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")}
    if group == "task":
        from omnirun import plugins

        found |= set(plugins.tasks())
    return sorted(found)
