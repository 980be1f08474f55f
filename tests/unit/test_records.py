"""Regression tests for bugs found while restructuring the core (each failed before its fix)."""

from __future__ import annotations

import json
from pathlib import Path

from omnirun import inputs
from omnirun.config import GenerationConfig, InputConfig


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_record_overrides_are_checked_against_the_runs_generation_config(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"prompt": "a", "temperature": 0}, {"prompt": "b", "min_new_tokens": 150}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    greedy_long = GenerationConfig(do_sample=False, max_new_tokens=200)
    data = inputs.read(InputConfig(path=str(path)), greedy_long)
    assert data.problems == []
    # against the defaults (do_sample=true, max_new_tokens=100) both records are bad, as they should be
    assert len(inputs.read(InputConfig(path=str(path))).problems) == 2
