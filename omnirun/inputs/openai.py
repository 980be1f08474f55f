"""OpenAI Batch API request lines (also vLLM's `run-batch`) as omnirun records.

Input lines look like `{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model":
"...", "messages": [...], "max_tokens": 50}}` (or `/v1/completions` with `body.prompt`). vLLM's run-batch also
takes `/v1/embeddings` (`body.input`: a string or a list of strings), `/v1/score` (`body.text_1`, `body.text_2`)
and `/v1/rerank` (`body.query`, `body.documents`); `URL_TASKS` says which omnirun task serves each.
"""

from __future__ import annotations

import json
import re
from typing import Any

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
EMBEDDINGS_URL = "/v1/embeddings"
SCORE_URL = "/v1/score"
RERANK_URL = "/v1/rerank"
GENERATION_URLS = (CHAT_URL, COMPLETIONS_URL)
URL_TASKS = {CHAT_URL: "chat", COMPLETIONS_URL: "generate", EMBEDDINGS_URL: "embed", SCORE_URL: "rerank"}
URL_TASKS[RERANK_URL] = "rerank"
"""The task a batch file's URL selects when the run does not name one."""

BODY_TO_GENERATION = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "min_tokens": "min_new_tokens",
    "response_format": "response_format",
}
IGNORED_BODY_KEYS = frozenset({"model", "messages", "prompt", "user", "stream", "n", "seed", "metadata", "store"})


_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*("(?:[^"\\\n]|\\.)*"|-?\d+)')


def custom_id_in(raw: bytes) -> str | None:
    """The `custom_id` an OpenAI request line names, read from a line that does not parse as a whole (a torn
    or malformed line); None when it names none."""
    match = _CUSTOM_ID.search(raw)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return str(value) if isinstance(value, str | int) else None


def is_openai_request(obj: dict[str, Any]) -> bool:
    return "custom_id" in obj and isinstance(obj.get("body"), dict)


def from_openai_request(obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An OpenAI batch request as omnirun's record fields (`id`, `messages`/`prompt`, generation overrides,
    `template`), and a problem if the request asks for something omnirun cannot do."""
    body = obj["body"]
    url = obj.get("url", CHAT_URL)
    record: dict[str, Any] = {"id": obj["custom_id"], "url": url}
    if url not in GENERATION_URLS:
        return from_task_request(url, body, record)
    if url == CHAT_URL:
        record["messages"] = body.get("messages")
    elif url == COMPLETIONS_URL:
        record["prompt"] = body.get("prompt")
        record["template"] = False  # a completions request is a raw prompt, as in OpenAI's API
    if body.get("n", 1) != 1:
        return record, "body.n other than 1 is not supported"
    for key, value in body.items():
        if key in BODY_TO_GENERATION:
            record[BODY_TO_GENERATION[key]] = value
        elif key not in IGNORED_BODY_KEYS:
            return record, f"body.{key} is not supported"
    if "temperature" in body:
        record["do_sample"] = body["temperature"] > 0
        if body["temperature"] == 0:
            del record["temperature"]  # greedy
    return record, None


EMBEDDINGS_BODY_KEYS = frozenset({"input", "model", "encoding_format", "user"})
"""The embeddings request fields omnirun honours (`model` names the served model; `user` is informational)."""


def from_task_request(url: str, body: dict[str, Any], record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An embeddings, score or rerank request as a record of its task's fields."""
    if url == EMBEDDINGS_URL:
        value = body.get("input")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        record["texts" if isinstance(value, list) else "prompt"] = value
        if body.get("encoding_format", "float") != "float":
            return record, "body.encoding_format: only 'float' is supported"
        extra = sorted(set(body) - EMBEDDINGS_BODY_KEYS)
        if extra:  # e.g. `dimensions`: the model's full vector would be returned as if it were honoured
            return record, f"body.{extra[0]} is not supported (omnirun returns the model's full embedding)"
    elif url == SCORE_URL:
        record["query"], docs = body.get("text_1"), body.get("text_2")
        record["documents"] = [docs] if isinstance(docs, str) else docs
    elif url == RERANK_URL:
        record["query"], record["documents"] = body.get("query"), body.get("documents")
        if body.get("top_n") is not None:
            record["top_n"] = body["top_n"]
    else:
        known = ", ".join(URL_TASKS)
        return record, f"url {url!r} is not supported; use one of {known}"
    return record, None


def check_url(url: str | None, served: tuple[str, ...], task: str) -> str | None:
    """A problem when the chosen task cannot serve a request's endpoint (it becomes that record's error row)."""
    if url is None or url in served:
        return None
    other = URL_TASKS.get(url)
    fix = f"run it with task={other}" if other else f"use one of {', '.join(URL_TASKS)}"
    return f"url {url!r} cannot be served by task={task or 'generate'}; {fix}"


def task_of_file(path: str) -> str | None:
    """The non-generation task the first request line of a batch file asks for (None: not a batch file, a
    generation endpoint, or unreadable: the normal input checks report those)."""
    import gzip
    import json
    from pathlib import Path

    try:
        with Path(path).expanduser().open("rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            stream = gzip.open(raw) if head == b"\x1f\x8b" else raw  # noqa: SIM115 (`raw` is closed by the with)
            for line in stream:
                if line.strip():
                    obj = json.loads(line)
                    break
            else:
                return None
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(obj, dict) or not is_openai_request(obj):
        return None
    task = URL_TASKS.get(str(obj.get("url", CHAT_URL)))
    return task if task not in ("chat", "generate") else None
