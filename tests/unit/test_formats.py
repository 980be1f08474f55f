"""Standard formats: OpenAI Batch API JSONL in and out, results as a Hugging Face dataset and parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnirun import inputs
from omnirun.config import InputConfig
from omnirun.results import formats

from samples import REQUESTS, must


@pytest.fixture()
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "batch_input.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    return path


def test_openai_requests_become_records(batch_file: Path) -> None:
    data = inputs.read(InputConfig(path=str(batch_file)))
    assert data.openai
    chat, cmpl, emb, n2 = data.records
    assert chat.id == "chat-1" and chat.messages == [{"role": "user", "content": "hello world"}]
    assert chat.overrides == {"max_new_tokens": 3}
    assert cmpl.prompt == "the quick brown fox" and cmpl.template is False
    assert cmpl.overrides == {"max_new_tokens": 4, "do_sample": False}
    assert "task=embed" in must(emb.error) and "n other than 1" in must(n2.error)


def test_response_for_error_rows() -> None:
    line = formats.to_openai_response({"id": "x", "error": "line 3: bad"}, "m", 0)
    assert line["error"] == {"code": "invalid_request", "message": "line 3: bad"}
