"""OpenAI Batch API request lines (also vLLM's `run-batch`) as omnirun records.

Input lines look like `{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model":
"...", "messages": [...], "max_tokens": 50}}` (or `/v1/completions` with `body.prompt`).
"""

from __future__ import annotations

from typing import Any

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"

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


def is_openai_request(obj: dict[str, Any]) -> bool:
    return "custom_id" in obj and isinstance(obj.get("body"), dict)


def from_openai_request(obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An OpenAI batch request as omnirun's record fields (`id`, `messages`/`prompt`, generation overrides,
    `template`), and a problem if the request asks for something omnirun cannot do."""
    body = obj["body"]
    url = obj.get("url", CHAT_URL)
    record: dict[str, Any] = {"id": obj["custom_id"]}
    if url == CHAT_URL:
        record["messages"] = body.get("messages")
    elif url == COMPLETIONS_URL:
        record["prompt"] = body.get("prompt")
        record["template"] = False  # a completions request is a raw prompt, as in OpenAI's API
    else:
        return record, f"url {url!r} is not supported; use {CHAT_URL} or {COMPLETIONS_URL}"
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
