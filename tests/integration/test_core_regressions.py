"""Regression tests for bugs found while restructuring the core (each failed before its fix)."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import pytest

from clirun import omnirun, only_run_dir


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_record_overrides_under_greedy_run_end_to_end(tmp_path: Path, tiny_llama: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "temperature": 0, "max_new_tokens": 2}])
    args = [f"model.name={tiny_llama}", f"input.path={path}", "generation=greedy", "input.on_error=fail"]
    assert omnirun(tmp_path / "out", *args) == 0
    (row,) = [json.loads(x) for x in (only_run_dir(tmp_path / "out") / "outputs.jsonl").read_text().splitlines()]
    assert row["error"] is None and row["output_tokens"] == 2


class SlowStdin(io.StringIO):
    """A person who takes `delay` seconds to type each line."""

    def __init__(self, text: str, delay: float) -> None:
        super().__init__(text)
        self.delay = delay

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        time.sleep(self.delay)
        return super().readline()


def test_interactive_chat_metrics_exclude_typing_time(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", SlowStdin("hello\nand again\n", delay=0.6))
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "task=chat", "generation.max_new_tokens=3") == 0
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["num_samples"] == 2
    assert metrics["generation_s"] < 0.6  # the model's time: three readline() waits of 0.6 s are not in it
    assert metrics["output_tokens_per_s"] == pytest.approx(metrics["output_tokens"] / metrics["generation_s"])
