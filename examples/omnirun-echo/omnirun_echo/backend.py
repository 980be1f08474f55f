"""`hardware.backend=echo`: answers each prompt with the prompt itself (at most `max_new_tokens` words), streams
it word by word, and counts tokens by whitespace, so it needs no tokenizer from the hub and no weights.

It implements omnirun's text-generation contract (`omnirun.engine.base.TextGenerator`); `auto` never takes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Self

from omnirun.config import Device, DType, GenerationConfig, HardwareConfig, ModelConfig, ModelType
from omnirun.engine.base import Completion, ConvenienceAPI, MemoryReport, ParameterCount
from omnirun.hardware import MB, HardwareInfo, HardwarePlan, Placement
from omnirun.plugins import BackendSpec, Capability


class Words:
    """A whitespace tokenizer: each distinct word gets the next id."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        self.all_special_ids: list[int] = []

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [self.id(word) for word in text.split()]}

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        if word not in self.ids:
            self.ids[word] = len(self.words)
            self.words.append(word)
        return self.ids[word]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)


class EchoStream:
    """The prompt's words one at a time; `completion` once they are all out."""

    def __init__(self, words: list[str], n_in: int, limit: int) -> None:
        self.words, self.n_in, self.limit = words, n_in, limit
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        out = self.words[: self.limit]
        times = []
        for i, word in enumerate(out):
            times.append(time.perf_counter() - start)
            yield word if i == 0 else " " + word
        finish = "length" if len(self.words) > self.limit else "stop"
        elapsed = time.perf_counter() - start
        ttft = times[0] if times else None
        self.completion = Completion(" ".join(out), self.n_in, len(out), finish, elapsed, ttft, times)


class EchoEngine(ConvenienceAPI):
    """The echo backend's engine."""

    def __init__(
        self,
        model: ModelConfig,
        hardware: HardwareConfig,
        *,
        placement: Placement | None = None,
        info: HardwareInfo | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model_config, self.placement = model, placement
        self.default_generation = generation or GenerationConfig()
        self.batch_size = batch_size
        self.model_type: ModelType | None = ModelType.causal_lm
        self.tokenizer = Words()
        self.plan: HardwarePlan | None = None
        self.source: Any = None
        self.max_context: int | None = None

    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def device(self) -> Device:
        return Device.cpu

    @property
    def is_loaded(self) -> bool:
        return self.plan is not None

    def check_task(self, task: str) -> None:
        return None  # the core already refused every task that needs more than text generation

    def load_tokenizer(self) -> Any:
        return self.tokenizer

    def load_model(self) -> Self:
        reason = self.placement.backend_reason if self.placement else "echo as requested"
        self.plan = HardwarePlan(Device.cpu, DType.float32, None, 8, reasons={"backend": reason}, backend="echo")
        return self

    def unload_model(self) -> None:
        self.plan = None

    def parameters(self) -> ParameterCount | None:
        return ParameterCount(0, 0)

    def memory(self) -> MemoryReport:
        import psutil

        return MemoryReport(0.0, psutil.Process().memory_info().rss / MB, None, None)

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        return len(text.split())

    def has_chat_template(self) -> bool:
        return True

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(str(m.get("content", "")) for m in messages)

    def argmax_next(self, ids: list[int]) -> list[int]:
        return ids[1:] + ids[-1:]

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        return [self._echo(text.split(), params) for text in texts]

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        return [self._echo([self.tokenizer.decode([i]) for i in row], params) for row in ids]

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> EchoStream:
        words = text.split()
        return EchoStream(words, len(words), params.max_new_tokens)

    def _echo(self, words: list[str], params: GenerationConfig) -> Completion:
        stream = EchoStream(words, len(words), params.max_new_tokens)
        for _ in stream:
            pass
        assert stream.completion is not None
        return stream.completion


BACKEND = BackendSpec(
    name="echo",
    factory=EchoEngine,
    capabilities=frozenset({Capability.generate}),
    summary="answers each prompt with the prompt itself (an example plugin)",
    honours=frozenset(),  # no weights: no model loading option applies
)
