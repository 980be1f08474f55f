"""`task=count_words`: one row per record with `words`, the number of whitespace-separated words of its prompt.
It loads no model (`needs=None`), so any backend setting is fine."""

from __future__ import annotations

from typing import Any

from omnirun.inputs.records import InputSpec
from omnirun.plugins import TaskSpec
from omnirun.tasks import per_record


def count_words(fields: dict[str, Any]) -> dict[str, Any]:
    return {"words": len(fields["prompt"].split())}


COUNT_WORDS = TaskSpec(
    name="count_words",
    run=per_record(count_words),
    needs=None,
    inputs=InputSpec(("prompt",), task="count_words"),
    summary="the number of whitespace-separated words of each prompt",
    defaults={"batch_size": 64},
)
