"""Defaults are written once: the schema (omnirun/config.py) holds them, and a conf/ YAML holds only what differs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from omnirun.config import RunConfig

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("model", "hardware", "generation", "task", "tracking", "cluster")


@pytest.mark.parametrize("path", sorted(p for g in GROUPS for p in (CONF / g).glob("*.yaml")), ids=lambda p: p.stem)
def test_no_group_option_repeats_a_schema_default(path: Path) -> None:
    node = getattr(RunConfig(), path.parent.name)
    values = yaml.safe_load(path.read_text()) or {}
    repeated = {
        key: value
        for key, value in values.items()
        if key != "name" or path.parent.name != "task"  # a task option names its task
        if dataclasses.is_dataclass(node) and getattr(node, key, object()) == value
    }
    assert not repeated, f"{path.relative_to(CONF)} repeats the schema's defaults {repeated}"
