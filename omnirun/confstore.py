"""Where the typed schemas meet Hydra and OmegaConf: registering them, the `oc.env` resolver omnirun allows,
and reading a saved config.yaml back into a RunConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnirun.config import RunConfig, TaskConfig
from omnirun.errors import ConfigError


def load_saved(path: Path, overrides: list[str] | None = None) -> RunConfig:
    """A run's saved config.yaml (plus `key=value` overrides) as a validated RunConfig; ConfigError if it is
    not one."""
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.load(path)
        schema = OmegaConf.structured(RunConfig(task=saved_task_schema(saved)))
        raw = OmegaConf.merge(schema, saved, OmegaConf.from_dotlist(overrides or []))
        cfg = OmegaConf.to_object(raw)
    except Exception as exc:
        raise ConfigError(f"{path} is not an omnirun config: {str(exc).strip().splitlines()[0]}") from None
    assert isinstance(cfg, RunConfig)
    return cfg.validate()


def saved_task_schema(saved: Any) -> TaskConfig:
    """The `task` schema of a saved config: its task's config class (plain `TaskConfig` for an unknown task, whose
    validation then names the installed ones)."""
    from omnirun import plugins

    name = str(saved.get("task", {}).get("name", "generate")) if hasattr(saved, "get") else "generate"
    spec = plugins.tasks().get(name)
    cls = (spec.config if spec is not None else None) or TaskConfig
    return cls(name=name)


def register_configs() -> None:
    """Register the schema; `conf/config.yaml` names it first in `defaults:`, so every group option is typed
    and a typo in a YAML file or an override fails at compose time. Also replaces OmegaConf's `oc.env`
    resolver with one that refuses secret variables (their values would be written to config.yaml)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("oc.env", env_resolver, replace=True)

    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    register_tasks(store)


def register_tasks(store: Any) -> None:
    """`task=<name>` for every installed task (built-in and plugin alike): a `task` group option holding an
    instance of its spec's config class with its `TaskSpec.defaults`, so each task's own options (and no
    other task's) are keys under `task.`."""
    from omnirun import plugins

    for name, spec in plugins.tasks().items():
        cls = spec.config or TaskConfig
        store.store(group="task", name=name, node=cls(name=name, **dict(spec.defaults)))


def env_resolver(key: str, default: Any = "__omnirun_no_default__") -> str | None:
    """`${oc.env:NAME}` as OmegaConf resolves it, except for secrets (names with TOKEN, KEY, SECRET, PASSWORD):
    omnirun writes the resolved config to the run directory, so it must never hold one."""
    from omegaconf.resolvers import oc

    from omnirun.secrets import is_secret_variable

    if is_secret_variable(key):
        raise ConfigError(
            f"${{oc.env:{key}}}: {key} holds a secret and the resolved config is saved with the run; "
            "libraries read HF_TOKEN from the environment themselves, so leave it out of the config"
        )
    if default == "__omnirun_no_default__":
        return oc.env(key)
    return oc.env(key, default)
