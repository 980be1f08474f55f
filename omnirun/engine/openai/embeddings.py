"""`task=embed` through the server's `/embeddings`: one request per batch of records, each record's vector (or
vectors, for an OpenAI batch line with a list of inputs) in its row.

The server pools (`task.pooling` is its choice, not the client's); `task.normalize=true` scales each vector to
unit length here, as on the other backends. The server reports the batch's prompt tokens in all; each record
gets its share, in proportion to its texts' lengths.
"""

from __future__ import annotations

import math
from typing import Any

from omnirun.config import TaskConfig
from omnirun.engine.base import Answer
from omnirun.engine.openai.body import estimate_tokens
from omnirun.engine.openai.client import Endpoint, RequestFailed, with_retries

PATH = "/embeddings"


def embed(
    endpoint: Endpoint, model: str, items: list[dict[str, Any]], options: TaskConfig, retries: int
) -> list[Answer]:
    """One `Answer` per item: `{embedding, dim}` for an item's `prompt`, `{embeddings, dim}` for its `texts`."""
    groups = [[str(t) for t in item["texts"]] if "texts" in item else [str(item["prompt"])] for item in items]
    texts = [t for group in groups for t in group]
    answer = with_retries(lambda: endpoint.post_json(PATH, {"model": model, "input": texts}), retries)
    vectors = vectors_of(answer, len(texts), endpoint.where("POST", PATH))
    if getattr(options, "normalize", True):  # task=embed's option (the embed task's config has it)
        vectors = [unit(v) for v in vectors]
    tokens = shares(answer, groups)
    answers, at = [], 0
    for item, group, n in zip(items, groups, tokens, strict=True):
        part, at = vectors[at : at + len(group)], at + len(group)
        dim = len(part[0])
        result = {"embeddings": part, "dim": dim} if "texts" in item else {"embedding": part[0], "dim": dim}
        answers.append(Answer(result, input_tokens=n))
    return answers


def vectors_of(answer: Any, count: int, where: str) -> list[list[float]]:
    """The vectors of an embeddings answer, in input order; RequestFailed when it is not one."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else "no"
        raise RequestFailed(f"{where}: the answer has {got} embeddings for {count} inputs")
    ordered = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    vectors = [d.get("embedding") if isinstance(d, dict) else None for d in ordered]
    if not all(isinstance(v, list) and v for v in vectors):
        raise RequestFailed(f"{where}: an embedding is not a list of floats (encoding_format float is expected)")
    return [[float(x) for x in v] for v in vectors if isinstance(v, list)]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def shares(answer: Any, groups: list[list[str]]) -> list[int]:
    """Each item's prompt tokens: the server's total split by estimated length, else the estimates."""
    estimates = [sum(estimate_tokens(t) for t in group) for group in groups]
    usage = answer.get("usage") if isinstance(answer, dict) else None
    total = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if not isinstance(total, int) or not sum(estimates):
        return estimates
    scale = total / sum(estimates)
    return [round(e * scale) for e in estimates]
