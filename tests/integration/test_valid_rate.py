"""metrics.json's `valid_rate`: per format type, the share of outputs that follow their response_format."""

from __future__ import annotations

import json
from pathlib import Path

from clirun import omnirun, only_run_dir


def test_valid_rate_per_format(tmp_path: Path, tiny_llama: Path) -> None:
    schema = {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}}, "required": ["kind"]}
    lines = [
        {"id": "s", "prompt": "hello", "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
        {"id": "r", "prompt": "numbers", "response_format": {"type": "regex", "pattern": "[0-9]{2,4}"}},
        {"id": "f", "prompt": "free text"},
    ]
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = (f"model.name={tiny_llama}", f"input.path={records}", "generation=greedy", "generation.max_new_tokens=24")
    assert omnirun(tmp_path / "out", *args, "task.batch_size=3") == 0
    metrics = json.loads((only_run_dir(tmp_path / "out") / "metrics.json").read_text())
    assert metrics["valid_rate"] == {"json_schema": 1.0, "regex": 1.0}
    assert metrics["num_errors"] == 0
