"""A record's other fields travel into its row (`fields`): from JSONL, CSV and datasets, for generation and for
the tasks beyond it; model inputs, ids, generation overrides and template columns stay out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omnirun import inputs
from omnirun.config import GenerationConfig, InputConfig
from omnirun.inputs.records import InputSpec
from omnirun.results.schema import ResultRow


def carried(spec: InputSpec | None = None, **cfg: Any) -> list[dict[str, Any] | None]:
    data = inputs.read(InputConfig(**cfg), GenerationConfig(), spec=spec)
    return [r.carried for r in data.records]


def test_jsonl_generation_records_carry_what_is_not_an_input(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        {"id": "a", "prompt": "hi", "reference": "yo", "meta": {"src": 3}, "max_new_tokens": 4},
        {"id": "b", "messages": [{"role": "user", "content": "x"}], "reference": ["1", "2"]},
        {"id": "c", "prompt": "nothing else"},
        {"id": "d", "prompt": 5, "reference": "kept on an error row too"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert carried(path=str(path)) == [
        {"reference": "yo", "meta": {"src": 3}},
        {"reference": ["1", "2"]},
        None,
        {"reference": "kept on an error row too"},
    ]


def test_template_columns_and_a_renamed_id_are_inputs(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"qid": 7, "q": "2+2?", "answer": "4", "level": "easy"}) + "\n")
    got = carried(path=str(path), template="Q: {q}", id_field="qid")
    assert got == [{"answer": "4", "level": "easy"}]


def test_csv_and_task_records_carry_their_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,question,context,answer\n1,Who?,Ann met Bob.,Ann\n")
    spec = InputSpec(("question", "context"), task="qa")
    assert carried(spec, path=str(path)) == [{"answer": "Ann"}]


def test_dataset_rows_carry_json_columns_only(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_list([{"prompt": "hi", "reference": "yo", "blob": b"\x00\x01", "score": 0.5}]).save_to_disk(
        str(folder)
    )
    assert carried(dataset=str(folder)) == [{"reference": "yo", "score": 0.5}]


def test_a_row_writes_its_fields_and_reads_them_back() -> None:
    row = ResultRow(id="1", inputs={"question": "q"}, result={"answer": "a"}, fields={"reference": "a"})
    obj = row.to_json()
    assert obj["fields"] == {"reference": "a"} and obj["answer"] == "a"
    back = ResultRow.from_json(json.loads(json.dumps(obj)))
    assert back.fields == {"reference": "a"} and back.result == {"answer": "a"}
