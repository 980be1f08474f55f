"""Records of the tasks beyond generation: each task's fields validated into error records, OpenAI embeddings /
score / rerank request lines, the URL that picks a task, and the row schema round trip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from omnirun.config import TaskName
from omnirun.errors import ConfigError
from omnirun.inputs import Record, make_record
from omnirun.inputs.openai import task_of_file
from omnirun.results.schema import ResultRow
from omnirun.task_config import task_config
from omnirun.tasks import input_spec

from samples import must


def record(task: TaskName, obj: dict[str, Any]) -> Record:
    return make_record(0, "0", obj, spec=input_spec(task))


@pytest.mark.parametrize(
    ("task", "obj", "error"),
    [
        (TaskName.qa, {"question": "q"}, "missing 'context' (task=qa reads 'question', 'context')"),
        (TaskName.qa, {"question": 3, "context": "c"}, "'question' must be a string, got int"),
        (TaskName.rerank, {"query": "q", "documents": []}, "'documents' must be a non-empty list"),
        (TaskName.rerank, {"query": "q", "documents": ["a", ""]}, "'documents' must be a non-empty list"),
        (TaskName.image_classify, {"image": 7}, "'image' must be a file path, a URL or a dataset image value"),
        (TaskName.transcribe, {"audio": ""}, "'audio' is empty"),
        (TaskName.embed, {"text": "\ud800"}, "lone surrogate"),
        (TaskName.classify, {"prompt": "a", "text_pair": ""}, "'text_pair' is empty"),
        (TaskName.image, {"negative_prompt": "x"}, "missing 'prompt'"),
    ],
)
def test_bad_task_records_become_error_records(task: TaskName, obj: dict, error: str) -> None:
    assert error in (record(task, obj).error or "")


def test_task_fields_are_kept_and_text_is_an_alias_of_prompt() -> None:
    qa = record(TaskName.qa, {"id": 5, "question": "q", "context": "c", "extra": 1})
    assert qa.id == "5" and qa.fields == {"question": "q", "context": "c"} and qa.error is None
    emb = record(TaskName.embed, {"text": "hello"})
    assert emb.prompt == "hello"
    cap = record(TaskName.caption, {"image": {"path": "a.png", "bytes": b"x"}})
    assert cap.error is None and cap.prompt is None


def request(url: str, body: dict) -> dict:
    return {"custom_id": "r", "method": "POST", "url": url, "body": {"model": "m", **body}}


def test_openai_task_requests() -> None:
    one = record(TaskName.embed, request("/v1/embeddings", {"input": ["only"]}))
    many = record(TaskName.embed, request("/v1/embeddings", {"input": ["a", "b"]}))
    assert one.prompt == "only" and many.fields["texts"] == ["a", "b"] and many.error is None
    score = record(TaskName.rerank, request("/v1/score", {"text_1": "q", "text_2": "d"}))
    assert score.fields == {"query": "q", "documents": ["d"]} and score.url == "/v1/score"
    rerank = record(TaskName.rerank, request("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 1}))
    assert rerank.fields["top_n"] == 1
    wrong = record(TaskName.rerank, request("/v1/embeddings", {"input": "x"}))
    assert "cannot be served by task=rerank; run it with task=embed" in must(wrong.error)
    unknown = record(TaskName.embed, request("/v1/audio", {}))
    assert "is not supported" in must(unknown.error)
    generation = make_record(0, "0", request("/v1/embeddings", {"input": "x"}))
    assert "run it with task=embed" in (generation.error or "")


def test_the_url_of_a_batch_file_picks_the_task(tmp_path: Path) -> None:
    plain = tmp_path / "b.jsonl"
    plain.write_text(json.dumps(request("/v1/rerank", {"query": "q", "documents": ["a"]})) + "\n")
    zipped = tmp_path / "b.jsonl.gz"
    zipped.write_bytes(gzip.compress(json.dumps(request("/v1/embeddings", {"input": "x"})).encode()))
    chat = tmp_path / "c.jsonl"
    chat.write_text(json.dumps(request("/v1/chat/completions", {"messages": []})) + "\n")
    assert task_of_file(str(plain)) == "rerank" and task_of_file(str(zipped)) == "embed"
    assert task_of_file(str(chat)) is None and task_of_file(str(tmp_path / "missing")) is None


def test_task_rows_round_trip() -> None:
    row = ResultRow(id="1", inputs={"question": "q", "context": "c"}, result={"answer": "a", "score": 0.5})
    row.input_tokens, row.e2e_ms, row.audio_s = 7, 10.0, 2.0
    obj = row.to_json()
    assert list(obj)[:5] == ["id", "question", "context", "answer", "score"] and "output" not in obj
    back = ResultRow.from_json(json.loads(json.dumps(obj)))
    assert back.inputs == {"question": "q", "context": "c"} and back.result == {"answer": "a", "score": 0.5}


@pytest.mark.parametrize(
    ("task", "key", "value"),
    [
        ("classify", "top_k", 0),
        ("detect", "threshold", 1.5),
        ("transcribe", "chunk_length_s", -1.0),
        ("image", "num_inference_steps", 0),
        ("image", "height", 30),
        ("image", "guidance_scale", float("inf")),
        ("qa", "max_answer_len", 0),
    ],
)
def test_task_options_are_checked(task: str, key: str, value: object) -> None:
    """Each task's own options (its spec's config class) in range; one line naming the key."""
    with pytest.raises(ConfigError, match=f"task.{key}"):
        task_config(task, **{key: value})


@pytest.mark.parametrize("top_n", [-1, 0, 3, 10**9, True, 1.5, "2"])
def test_rerank_top_n_outside_one_to_the_document_count_is_an_error_record(top_n: object) -> None:
    """0, -1 or 10**9 used to be accepted (ignored or cut silently)."""
    bad = record(TaskName.rerank, {"query": "q", "documents": ["a", "b"], "top_n": top_n})
    assert "'top_n' must be an integer from 1 to the number of documents (2)" in must(bad.error)
    via_openai = record(TaskName.rerank, request("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": top_n}))
    assert "'top_n' must be an integer from 1 to the number of documents (1)" in must(via_openai.error)
    assert record(TaskName.rerank, {"query": "q", "documents": ["a", "b"], "top_n": 2}).error is None


def test_an_embeddings_request_option_omnirun_would_ignore_is_an_error_record() -> None:
    """`dimensions` asks for a shortened vector; answering with the full one would be a silent wrong answer."""
    asked = record(TaskName.embed, request("/v1/embeddings", {"input": "x", "dimensions": 8}))
    assert "body.dimensions is not supported" in must(asked.error)
    fine = record(TaskName.embed, request("/v1/embeddings", {"input": "x", "encoding_format": "float", "user": "u"}))
    assert fine.error is None


def test_response_format_is_refused_where_nothing_applies_it() -> None:
    from omnirun.config import GenerationConfig, RunConfig

    fmt = {"type": "json_object"}
    RunConfig(generation=GenerationConfig(response_format=fmt)).validate()  # generate applies it
    for task in ("caption", "embed", "score", "export"):
        cfg = RunConfig(generation=GenerationConfig(response_format=fmt), task=task_config(task))
        with pytest.raises(ConfigError, match=f"generation.response_format .* task={task} does not apply it"):
            cfg.validate()
