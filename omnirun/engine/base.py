"""What every inference engine returns and offers, independent of the backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from omnirun.config import GenerationConfig

NOT_LOADED = "the model is not loaded; call load_model() first (or use `with Engine(...) as engine:`)"


@dataclass
class Completion:
    """One generated answer with its token counts and timings."""

    text: str
    input_tokens: int
    """Prompt tokens fed to the model (after the chat template, without padding)."""
    output_tokens: int
    """Tokens generated, counting the end-of-sequence token when one was produced."""
    finish_reason: str
    """`stop` (end-of-sequence produced) or `length` (max_new_tokens reached)."""
    e2e_s: float
    """Wall time of the `generate` call that produced it (shared by every prompt of a batch)."""
    ttft_s: float | None = None
    """Time from the call's start until its first new token existed (shared within a batch)."""
    token_times_s: list[float] = field(default_factory=list)
    """Seconds from the call's start at which each new token was produced (shared within a batch;
    empty under beam search)."""
    token_ids: list[int] = field(default_factory=list)
    """The generated token ids (what `output_tokens` counts)."""


@dataclass
class MemoryReport:
    model_footprint_mb: float | None
    """Bytes held by the model's parameters and buffers."""
    rss_mb: float
    """Resident memory of this process now."""
    cuda_allocated_mb: float | None
    cuda_reserved_mb: float | None


class Engine(Protocol):
    """The interface tasks and the runner rely on."""

    model_name: str
    model_type: str

    def load_model(self) -> Engine: ...
    def unload_model(self) -> None: ...
    def generate(
        self,
        texts: list[str],
        params: GenerationConfig,
        *,
        add_special_tokens: bool = True,
        seed: int | None = None,
    ) -> list[Completion]: ...
    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> StreamHandle: ...
    def render_chat(self, messages: list[dict[str, str]]) -> str: ...
    def has_chat_template(self) -> bool: ...
    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int: ...
    def memory(self) -> MemoryReport: ...


class StreamHandle(Protocol):
    """Iterates over text pieces as they are generated; `completion` is set once iteration ends."""

    completion: Completion | None

    def __iter__(self) -> Iterator[str]: ...


class SimpleAPI:
    """`infer`, `stream`, `chat` and `params` on top of an engine's `generate`, `stream_tokens` and
    `render_chat`: the Python API every backend offers the same way."""

    default_generation: GenerationConfig
    batch_size: int | None
    plan: Any

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        raise NotImplementedError

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> StreamHandle:
        raise NotImplementedError

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        raise NotImplementedError

    def _require_loaded(self) -> None:
        raise NotImplementedError

    def infer(self, prompt: str | list[str], **gen: Any) -> str | list[str]:
        """Complete one prompt (returns a string) or a list (returns a list, in input order, batched)."""
        self._require_loaded()
        seed = gen.pop("seed", None)
        params = self.params(**gen)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        size = self.batch_size or (self.plan.batch_size if self.plan else 1)
        texts: list[str] = []
        for i in range(0, len(prompts), size):
            texts += [c.text for c in self.generate(prompts[i : i + size], params, seed=seed)]
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: str, **gen: Any) -> Iterator[str]:
        """Yield text pieces as they are generated; their concatenation is the full completion."""
        self._require_loaded()
        seed = gen.pop("seed", None)
        return iter(self.stream_tokens(prompt, self.params(**gen), seed=seed))

    def chat(self, messages: list[dict[str, str]], **gen: Any) -> str:
        """Answer a conversation through the model's chat template."""
        self._require_loaded()
        seed = gen.pop("seed", None)
        text = self.render_chat(messages)
        return self.generate([text], self.params(**gen), add_special_tokens=False, seed=seed)[0].text

    def params(self, **gen: Any) -> GenerationConfig:
        """The engine's generation defaults with `gen` applied; ValueError names a bad parameter."""
        return self.default_generation.with_overrides(gen, prefix="")
