"""What every inference engine returns and offers, independent of the backend.

`EngineBase` is what every backend implements; `TextGenerator`, `Analyzer` and `Exporter` are the three
capabilities a backend's spec may declare (`omnirun.plugins.Capability`), `EngineCore` all three. `Engine` adds
the convenience API (`infer`, `stream`, `chat`, `params`, the context manager), which `ConvenienceAPI`
provides once for every text generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from omnirun.config import Device, ExportFormat, GenerationConfig, ModelType, TaskConfig, TaskName

if TYPE_CHECKING:
    from omnirun.engine.source import ModelSource
    from omnirun.hardware import HardwarePlan

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
    reasoning: str | None = None
    """The thinking a server returned apart from the answer (`reasoning_content`, as vLLM's reasoning parsers
    send it); None when it returned none (a local backend's thinking is in `text`: `omnirun.reasoning`)."""
    reasoning_tokens: int | None = None
    """The output tokens of `reasoning` (the server's `completion_tokens_details.reasoning_tokens`, else one per
    streamed piece of thinking)."""


@dataclass
class Answer:
    """One item's answer: the fields written into its row, and what the task layer turns into files."""

    result: dict[str, Any]
    input_tokens: int | None = None
    completion: Completion | None = None
    """caption (and transcribe's text): the generated text with its token counts and finish reason."""
    images: dict[str, list[Any]] = field(default_factory=dict)
    """PIL images to save as PNGs under the run directory; the row's `result[key]` gets their paths."""
    audio_s: float | None = None
    """The input audio's duration (transcribe, audio_classify)."""
    e2e_s: float | None = None
    """Wall time of the call that answered it (the task layer sets it to its batch's time when unset)."""


@dataclass
class MemoryReport:
    model_footprint_mb: float | None
    """Bytes held by the model's parameters and buffers."""
    rss_mb: float
    """Resident memory of this process now."""
    cuda_allocated_mb: float | None
    cuda_reserved_mb: float | None


@dataclass(frozen=True)
class ParameterCount:
    """How many parameters the loaded model has."""

    total: int
    """Every parameter (a 4-bit weight counts as the weights it packs, as Transformers' `num_parameters` does)."""
    trainable: int | None
    """Those with `requires_grad` (quantized weights are not); None where the backend has no such notion
    (llama.cpp)."""


@dataclass(frozen=True)
class SavedModel:
    """What `save` / `export_onnx` wrote."""

    path: Path
    format: ExportFormat
    files: tuple[str, ...]
    """The files written, relative to `path`, sorted."""
    max_abs_diff: float | None = None
    """ONNX only: the largest absolute difference between onnxruntime's and torch's outputs on a sample input
    (None when onnxruntime is not installed)."""


class StreamHandle(Protocol):
    """Iterates over text pieces as they are generated; `completion` is set once iteration ends."""

    @property
    def completion(self) -> Completion | None: ...
    def __iter__(self) -> Iterator[str]: ...


class EngineBase(Protocol):
    """What every engine has, whatever it serves: its state (model name, device, plan, where the weights came
    from) and its lifecycle. A backend implements this plus the capabilities its spec declares
    (`omnirun.plugins.Capability`): `TextGenerator`, `Analyzer`, `Exporter`."""

    @property
    def model_name(self) -> str:
        """What the user asked for: a short name, hub id, folder or `.gguf` path."""
        ...

    @property
    def model_type(self) -> ModelType | None:
        """`causal-lm` or `seq2seq`; None until `load_tokenizer()` detects it (when not given)."""
        ...

    @property
    def plan(self) -> HardwarePlan | None:
        """The hardware plan, made by `load_model()`."""
        ...

    @property
    def device(self) -> Device: ...
    @property
    def source(self) -> ModelSource | None:
        """Where the weights came from, set by `load_tokenizer()`."""
        ...

    @property
    def is_loaded(self) -> bool: ...
    def load_tokenizer(self) -> Any: ...
    def load_model(self) -> Self: ...
    def unload_model(self) -> None: ...
    def memory(self) -> MemoryReport: ...
    def check_task(self, task: TaskName) -> None:
        """Refuse (ConfigError, one line) a task this model cannot serve, reading its config only (no weights, no
        tokenizer); the engine then loads the head that serves it. `engine.build(..., task=...)` calls it."""
        ...

    def parameters(self) -> ParameterCount | None:
        """The loaded model's parameter count; None before `load_model()`."""
        ...


class TextGenerator(EngineBase, Protocol):
    """Capability `generate`: tokenize, generate, stream, chat (the generation tasks and `benchmark`)."""

    @property
    def tokenizer(self) -> Any:
        """Callable on text (`tok(text, add_special_tokens=...)["input_ids"]`), with `len()` and
        `all_special_ids`; None until `load_tokenizer()`."""
        ...

    @property
    def max_context(self) -> int | None: ...
    @property
    def default_generation(self) -> GenerationConfig: ...
    @property
    def batch_size(self) -> int | None:
        """Prompts per `generate` call in `infer`; None takes the plan's."""
        ...

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]: ...
    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]: ...
    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> StreamHandle: ...
    def render_chat(self, messages: list[dict[str, str]]) -> str: ...
    def has_chat_template(self) -> bool: ...
    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int: ...
    def argmax_next(self, ids: list[int]) -> list[int]:
        """The greedy next token after every prefix of `ids` (one pass; for agreement checks)."""
        ...


class Analyzer(EngineBase, Protocol):
    """Capability `analyze`: the tasks beyond generation over a batch of records."""

    def analyze(
        self,
        task: TaskName,
        items: list[dict[str, Any]],
        options: TaskConfig,
        params: GenerationConfig | None = None,
        seed: int | list[int] | None = None,
    ) -> list[Answer]:
        """A non-generation task (embed, classify, qa, transcribe, ...) over a batch of items (a record's
        fields, images and audio decoded), one `Answer` per item in order; `params` for caption. `seed`: one int
        for the batch, or one seed per item (the task layer gives `seed + record index`, so a record's answer
        does not depend on the batch it lands in)."""
        ...


class Exporter(EngineBase, Protocol):
    """Capability `export`: write the loaded model out."""

    def save(self, path: str | Path) -> SavedModel:
        """Write the loaded model (safetensors) and its tokenizer / processor into the folder `path`."""
        ...

    def export_onnx(self, path: str | Path) -> SavedModel:
        """Write the loaded model as ONNX (`model.onnx`) with its config and tokenizer into the folder `path`."""
        ...

    def push_to_hub(self, repo: str, folder: str | Path | None = None, *, private: bool = False) -> str:
        """Upload `folder` (written by `save` / `export_onnx`; None: the model as `save` writes it) to the hub
        repo `repo`, creating it; returns the commit URL. OmnirunError (one line) when it fails (offline)."""
        ...


class EngineCore(TextGenerator, Analyzer, Exporter, Protocol):
    """All three capabilities (the Transformers backend). The runner hands a task the engine its spec's
    capability promises; a backend implements only what it declares."""


class Engine(EngineCore, Protocol):
    """The complete engine: the core plus the convenience API every text generator offers the same way (the
    type the tasks see; a backend with fewer capabilities is never handed a task that needs the others)."""

    def infer(self, prompt: str | list[str], **gen: Any) -> str | list[str]: ...
    def stream(self, prompt: str, **gen: Any) -> Iterator[str]: ...
    def chat(self, messages: list[dict[str, str]], **gen: Any) -> str: ...
    def params(self, **gen: Any) -> GenerationConfig: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


# ------------------------------------------------------------------------------------ the convenience API
def generation_params(engine: TextGenerator, **gen: Any) -> GenerationConfig:
    """The engine's generation defaults with `gen` applied; ValueError names a bad parameter."""
    return engine.default_generation.with_overrides(gen, prefix="")


def infer(engine: TextGenerator, prompt: str | list[str], **gen: Any) -> str | list[str]:
    """Complete one prompt (returns a string) or a list (returns a list, in input order, batched)."""
    require_loaded(engine)
    seed = gen.pop("seed", None)
    params = generation_params(engine, **gen)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    size = engine.batch_size or (engine.plan.batch_size if engine.plan else 1)
    texts: list[str] = []
    for i in range(0, len(prompts), size):
        texts += [c.text for c in engine.generate(prompts[i : i + size], params, seed=seed)]
    return texts[0] if isinstance(prompt, str) else texts


def stream(engine: TextGenerator, prompt: str, **gen: Any) -> Iterator[str]:
    """Yield text pieces as they are generated; their concatenation is the full completion."""
    require_loaded(engine)
    seed = gen.pop("seed", None)
    return iter(engine.stream_tokens(prompt, generation_params(engine, **gen), seed=seed))


def chat(engine: TextGenerator, messages: list[dict[str, str]], **gen: Any) -> str:
    """Answer a conversation through the model's chat template."""
    require_loaded(engine)
    seed = gen.pop("seed", None)
    params = generation_params(engine, **gen)
    text = engine.render_chat(messages)
    return engine.generate([text], params, add_special_tokens=False, seed=seed)[0].text


def require_loaded(engine: EngineBase) -> None:
    if not engine.is_loaded:
        raise RuntimeError(NOT_LOADED)


_Core = TypeVar("_Core", bound=EngineBase)


class ConvenienceAPI:
    """`infer`, `stream`, `chat`, `params` and the context manager as methods, for any class that implements
    `TextGenerator` (each method's `self` is typed as one, so mypy checks the class provides what they use)."""

    def infer(self: TextGenerator, prompt: str | list[str], **gen: Any) -> str | list[str]:
        """Complete one prompt (returns a string) or a list (returns a list, in input order, batched)."""
        return infer(self, prompt, **gen)

    def stream(self: TextGenerator, prompt: str, **gen: Any) -> Iterator[str]:
        """Yield text pieces as they are generated; their concatenation is the full completion."""
        return stream(self, prompt, **gen)

    def chat(self: TextGenerator, messages: list[dict[str, str]], **gen: Any) -> str:
        """Answer a conversation through the model's chat template."""
        return chat(self, messages, **gen)

    def params(self: TextGenerator, **gen: Any) -> GenerationConfig:
        """The engine's generation defaults with `gen` applied; ValueError names a bad parameter."""
        return generation_params(self, **gen)

    def __enter__(self: _Core) -> _Core:
        return self.load_model()

    def __exit__(self: EngineBase, *exc: object) -> None:
        self.unload_model()
