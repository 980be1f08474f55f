"""Standard formats: OpenAI Batch API JSONL in and out, results as a Hugging Face dataset and parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clirun import omnirun, only_run_dir
from samples import REQUESTS


@pytest.fixture()
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "batch_input.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    return path


def test_openai_batch_round_trip(tmp_path: Path, tiny_llama: Path, batch_file: Path) -> None:
    assert omnirun(tmp_path, f"model.name={tiny_llama}", f"input.path={batch_file}", "task.batch_size=2") == 0
    run_dir = only_run_dir(tmp_path)
    rows = [json.loads(x) for x in (run_dir / "outputs.jsonl").read_text().splitlines()]
    lines = [json.loads(x) for x in (run_dir / "batch_output.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["chat-1", "cmpl-2", "emb-3", "n-4"]
    chat, cmpl, emb, _ = lines
    assert set(chat) == {"id", "custom_id", "response", "error"} and chat["error"] is None
    body = chat["response"]["body"]
    assert chat["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": rows[0]["output"]}
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] == rows[0]["output_tokens"] <= 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert cmpl["response"]["body"]["object"] == "text_completion"
    assert cmpl["response"]["body"]["choices"][0]["text"] == rows[1]["output"]
    assert cmpl["response"]["body"]["usage"]["completion_tokens"] <= 4
    assert emb["response"]["status_code"] == 400 and "run it with task=embed" in emb["error"]["message"]


def test_openai_output_on_request_for_plain_inputs(tmp_path: Path, tiny_llama: Path) -> None:
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "output.openai_batch=true", "generation.max_new_tokens=2") == 0
    (line,) = (only_run_dir(tmp_path) / "batch_output.jsonl").read_text().splitlines()
    assert json.loads(line)["custom_id"] == "0"


def test_results_as_a_dataset_and_parquet(tmp_path: Path, tiny_llama: Path) -> None:
    import datasets
    import pandas as pd

    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a"}\n{"messages": [{"role": "user", "content": "b"}]}\nbroken\n')
    code = omnirun(
        tmp_path / "out",
        f"model.name={tiny_llama}",
        f"input.path={path}",
        "output.dataset=true",
        "generation.max_new_tokens=2",
    )
    assert code == 0
    run_dir = only_run_dir(tmp_path / "out")
    ds = datasets.load_from_disk(str(run_dir / "dataset"))
    assert ds.num_rows == 3 and {"id", "output", "output_tokens", "error"} <= set(ds.column_names)
    meta = json.loads(ds.info.description)
    assert "generation" in meta["config"] and meta["metrics"]["num_samples"] == 3
    frame = pd.read_parquet(run_dir / "outputs.parquet")
    assert list(frame["id"]) == ["1", "2", "3"] and frame["error"].iloc[2].startswith("line 3")


def test_push_to_hub_needs_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert omnirun(tmp_path, "output.push_to_hub=me/results") == 2
    assert "output.dataset=true" in capsys.readouterr().err
