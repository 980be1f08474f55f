"""Test data and checks both tiers share (OpenAI batch requests, a 4-bit weight grid, PNG checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

REQUESTS = [
    {
        "custom_id": "chat-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "any", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 3},
    },
    {
        "custom_id": "cmpl-2",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "any", "prompt": "the quick brown fox", "max_tokens": 4, "temperature": 0},
    },
    {"custom_id": "emb-3", "method": "POST", "url": "/v1/embeddings", "body": {"model": "any", "input": "x"}},
    {
        "custom_id": "n-4",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}], "n": 2},
    },
]


def snap_to_grid(weight: Any, group: int | None = None) -> Any:
    """Round a weight onto 16 levels per group between the group's min and max (what Q4_1 dequantizes to)."""
    import torch

    from omnirun.engine.hf import optimize

    group = group or optimize.GROUP
    rows, cols = weight.shape
    w = weight.reshape(rows, cols // group, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    return (torch.round((w - low) / scale) * scale + low).reshape(rows, cols)


def must(value: str | None) -> str:
    """A value the test expects to be set (a record's `error` or `prompt`), as a `str`."""
    assert value is not None
    return value


def assert_png(path: Path, min_kb: int = 20) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_kb * 1024, f"{path}: only {len(data)} bytes"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 1000 and height >= 500, (width, height)  # 150 dpi, slide-sized
