"""Input shapes end to end on a tiny model: a compressed JSONL file with a bad line and a truncated tail, and
parquet shards named by a glob and streamed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from clirun import omnirun, only_run_dir


def rows_of(root: Path) -> list[dict]:
    return [json.loads(line) for line in (only_run_dir(root) / "outputs.jsonl").read_text().splitlines()]


def test_gzip_jsonl_bad_line_and_truncated_tail(tmp_path: Path, tiny_llama: Path) -> None:
    good = b"".join(json.dumps({"prompt": f"question number {i} is {i * 7919}"}).encode() + b"\n" for i in range(1500))
    whole = gzip.compress(b'{"prompt": "hello"}\nnot json\n' + good)
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    args = [f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=1", "task.batch_size=64"]
    assert omnirun(tmp_path / "out", *args) == 0
    rows = rows_of(tmp_path / "out")
    assert rows[0]["error"] is None and rows[0]["output"] is not None
    assert rows[1]["id"] == "2" and "line 2: not valid JSON" in rows[1]["error"]
    assert all(r["error"] is None for r in rows[2:-1]) and len(rows) > 100
    assert "in.jsonl.gz" in rows[-1]["error"] and "ends early" in rows[-1]["error"]
    assert rows[-1]["id"] == str(len(rows))  # one row a line, so the break is at line len(rows)


def test_streamed_parquet_shards_by_glob(tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    (tmp_path / "data").mkdir()
    for k in range(2):
        shard = {"question": [f"q{k}{x}" for x in "abc"], "qid": [f"{k}{x}" for x in "abc"]}
        datasets.Dataset.from_dict(shard).to_parquet(str(tmp_path / "data" / f"train-{k}.parquet"))
    monkeypatch.chdir(tmp_path)
    args = ["input.dataset=data/*.parquet", "input.field=question", "input.id_field=qid", "input.streaming=true"]
    code = omnirun(tmp_path / "out", f"model.name={tiny_llama}", *args, "input.limit=4", "generation.max_new_tokens=1")
    assert code == 0
    rows = rows_of(tmp_path / "out")
    assert sorted(r["id"] for r in rows) == ["0a", "0b", "0c", "1a"] and all(r["error"] is None for r in rows)
