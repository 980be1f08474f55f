"""Standard output formats: the OpenAI Batch API output (`batch_output.jsonl`) and a Hugging Face dataset.

`batch_output.jsonl` has one line per request: `{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}` with a `chat.completion` or `text_completion` body and its `usage` (generation tasks), an
embeddings `list` (task=embed) or a score / rerank body (task=rerank). A row read from a request line answers
in the shape of that request's URL; any other row in the shape of its task (`TASK_URLS`). Other tasks have no
OpenAI response shape: `check_openai_batch` refuses `output.openai_batch=true` for them before the model loads.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from omnirun import rundir
from omnirun.errors import ConfigError
from omnirun.inputs.openai import CHAT_URL, COMPLETIONS_URL, EMBEDDINGS_URL, RERANK_URL
from omnirun.results import strict
from omnirun.results.schema import to_jsonable
from omnirun.secrets import redact, secret_forms

TASK_URLS = {
    "generate": COMPLETIONS_URL,
    "batch": COMPLETIONS_URL,
    "stream": COMPLETIONS_URL,
    "chat": CHAT_URL,
    "embed": EMBEDDINGS_URL,
    "rerank": RERANK_URL,
}
"""The tasks whose rows have an OpenAI response shape, and the endpoint whose shape a row answers in when its
record did not come from a request line."""


def check_openai_batch(openai_batch: bool | None, task: str) -> None:
    """ConfigError (exit 2, before the model loads) for `output.openai_batch=true` on a task without an OpenAI
    response shape."""
    if openai_batch and task not in TASK_URLS:
        raise ConfigError(
            f"output.openai_batch=true: task={task} has no OpenAI response shape; it applies to task="
            f"{', '.join(TASK_URLS)} (set output.openai_batch=null or false)"
        )


def to_openai_response(row: dict[str, Any], model: str, created: int, task: str | None = None) -> dict[str, Any]:
    """One outputs.jsonl row as an OpenAI batch output line, in the shape of its request's URL, else its task's."""
    request_id = f"omnirun-{uuid.uuid4().hex[:24]}"
    line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": row["id"]}
    if row.get("error") is not None:
        line["response"] = {"status_code": 400, "request_id": request_id, "body": None}
        line["error"] = {"code": "invalid_request", "message": row["error"]}
        return line
    url = row.get("url") or TASK_URLS.get(task or "")
    if url in TASK_BODIES:
        answer = TASK_BODIES[url](row, model, created)
        line["response"] = {"status_code": 200, "request_id": request_id, "body": answer}
        line["error"] = None
        return line
    prompt_tokens, completion_tokens = row.get("input_tokens") or 0, row.get("output_tokens") or 0
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if "messages" in row:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": row.get("output")}}
        body: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion"}
    else:
        choice = {"index": 0, "text": row.get("output")}
        body = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion"}
    choice["finish_reason"] = row.get("finish_reason")
    body.update({"created": created, "model": model, "choices": [choice], "usage": usage})
    line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    line["error"] = None
    return line


def embeddings_body(row: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """`/v1/embeddings`: one `embedding` object per input, in input order."""
    vectors = row["embeddings"] if "embeddings" in row else [row["embedding"]]
    data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    tokens = row.get("input_tokens") or 0
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def score_body(row: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """vLLM's `/v1/score`: one `score` object per `text_2`."""
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(row["scores"])]
    tokens = row.get("input_tokens") or 0
    return {
        "id": f"score-{uuid.uuid4().hex[:24]}",
        "object": "list",
        "created": created,
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def rerank_body(row: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """vLLM's (Jina/Cohere-style) `/v1/rerank`: results best first, each with its document and score."""
    docs = row["documents"]
    results = [{"index": i, "document": {"text": docs[i]}, "relevance_score": row["scores"][i]} for i in row["ranking"]]
    tokens = row.get("input_tokens") or 0
    return {
        "id": f"rerank-{uuid.uuid4().hex[:24]}",
        "model": model,
        "usage": {"total_tokens": tokens},
        "results": results,
    }


TASK_BODIES = {"/v1/embeddings": embeddings_body, "/v1/score": score_body, "/v1/rerank": rerank_body}


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / rundir.OUTPUTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def write_openai_batch(run_dir: Path, model: str, task: str | None = None) -> Path:
    """batch_output.jsonl from the run's outputs.jsonl (all of it, also after a resume); `task`: the run's
    task, whose shape answers rows that did not come from a request line (see `TASK_URLS`)."""
    created = int(time.time())
    path = run_dir / rundir.BATCH_OUTPUT
    known = secret_forms()
    with path.open("w", encoding="utf-8") as f:
        for row in read_rows(run_dir):
            f.write(strict.dumps(to_openai_response(row, model, created, task), secrets=known) + "\n")
    return path


def write_dataset(run_dir: Path, config_yaml: str, metrics: dict[str, Any], push_to: str | None = None) -> Path:
    """The run's results as a Hugging Face dataset (`dataset/`, save_to_disk) and `outputs.parquet`, with the
    config and metrics in the dataset's description; pushed to the hub when `push_to` names a repo."""
    import datasets

    rows = read_rows(run_dir)
    columns = ("id", "prompt", "messages", "output", "input_tokens", "output_tokens", "finish_reason", "error")
    table = {
        c: [json.dumps(r[c]) if c == "messages" and r.get(c) is not None else r.get(c) for r in rows] for c in columns
    }
    info = datasets.DatasetInfo(
        description=strict.dumps({"config": redact(config_yaml), "metrics": to_jsonable(metrics)}),
    )
    ds = datasets.Dataset.from_dict(table, info=info)
    folder = run_dir / rundir.DATASET
    ds.save_to_disk(str(folder))
    ds.to_parquet(str(run_dir / rundir.PARQUET))
    if push_to:
        ds.push_to_hub(push_to)
    return folder
