"""The unit tier's fake engine: the Engine surface the tasks use, with failures on demand, and no model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from omnirun.config import GenerationConfig
from omnirun.engine.base import Completion


@dataclass
class FakeEngine:
    """Answers each prompt with its upper-cased text. `fail(texts)` may raise for a call (out of memory, a bad
    record, Ctrl-C); every call's size is kept in `calls`."""

    fail: Callable[[list[str]], None] = lambda texts: None
    calls: list[int] = field(default_factory=list)
    max_context: int | None = None
    chat_template: bool = False

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        self.calls.append(len(texts))
        self.fail(texts)
        return [Completion(t.upper(), 1, 1, "stop", 0.01, 0.005) for t in texts]

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        return len(text)

    def has_chat_template(self) -> bool:
        return self.chat_template

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return messages[-1]["content"]


class NullProgress:
    def update(self, samples: int, tokens: int) -> None:
        pass


@pytest.fixture()
def progress() -> Any:
    return NullProgress()
