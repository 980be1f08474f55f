"""generation.reasoning on a tiny model whose chat template opens a thinking block (as DeepSeek-R1's does): the
thinking goes to `reasoning`, the answer to `output`, metrics.json counts the thinking's tokens apart, and
`keep` leaves the text as generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clirun import omnirun, only_run_dir
from tiny_models import CHAT_TEMPLATE, build_tiny

THINKING_TEMPLATE = CHAT_TEMPLATE.replace("<|assistant|>\n", "<|assistant|>\n<think>\n")


@pytest.fixture(scope="module")
def thinking_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("thinking-llama"), chat_template=THINKING_TEMPLATE)


def rows_of(root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    run = only_run_dir(root)
    rows = [json.loads(line) for line in (run / "outputs.jsonl").read_text().splitlines()]
    return rows, json.loads((run / "metrics.json").read_text())


def test_thinking_is_split_from_the_answer(tmp_path: Path, thinking_llama: Path) -> None:
    assert "<think>" in THINKING_TEMPLATE
    common = [f"model.name={thinking_llama}", "generation=greedy", "generation.max_new_tokens=5", "input.prompt=Hi"]
    assert omnirun(tmp_path / "keep", *common, "generation.reasoning=keep") == 0
    (kept,), kept_metrics = rows_of(tmp_path / "keep")
    assert omnirun(tmp_path / "auto", *common) == 0
    (row,), metrics = rows_of(tmp_path / "auto")
    # the template opened the block and 5 tokens never closed it: all of it is thinking, the answer is empty
    assert "</think>" not in kept["output"]
    assert row["reasoning"] == kept["output"].strip() and row["output"] == ""
    assert row["reasoning_tokens"] == row["output_tokens"] == kept["output_tokens"]
    assert metrics["reasoning_tokens"] == row["reasoning_tokens"] and kept_metrics["reasoning_tokens"] is None
    assert "reasoning" not in kept


def test_a_response_format_runs_after_the_thinking(tmp_path: Path, thinking_llama: Path) -> None:
    """The format is enforced on the answer: the thinking before it is free text (a tiny random model thinks
    past its budget, so nothing here says its answer is valid; the run completes and reports the rate)."""
    fmt = "generation.response_format={type: regex, pattern: '[0-9]{2}'}"
    args = [f"model.name={thinking_llama}", "generation=greedy", "generation.max_new_tokens=6", "input.prompt=Hi"]
    assert omnirun(tmp_path / "fmt", *args, fmt) == 0
    (row,), metrics = rows_of(tmp_path / "fmt")
    assert row["error"] is None and "reasoning" in row
    assert set(metrics["valid_rate"]) == {"regex"}
