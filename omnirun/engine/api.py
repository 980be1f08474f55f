"""`TransformersEngine`: the seed's Python API, a thin facade over the Transformers backend (`HfEngine`).

Its keywords become the same typed `ModelConfig` / `HardwareConfig` the CLI builds, validated the same way
(a bad value raises ValueError naming the parameter); everything else is `HfEngine`'s.
"""

from __future__ import annotations

from typing import Any

from omnirun.checks import parse_choice
from omnirun.choices import Aggregation, Backend, Pooling
from omnirun.config import (
    Device,
    DType,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelInit,
    ModelType,
    Quantization,
    TaskName,
)
from omnirun.engine import capabilities, source
from omnirun.engine.base import Answer
from omnirun.engine.hf import HfEngine
from omnirun.task_config import task_config


class TransformersEngine(HfEngine):
    """Inference on a Hugging Face Transformers model.

    >>> with TransformersEngine("smollm2") as engine:
    ...     engine.chat([{"role": "user", "content": "What is the capital of France?"}], do_sample=False)

    `auto_config=True` lets the hardware planner choose device, dtype, quantization and batch size for the
    values left at `auto`; `auto_config=False` uses the given values as they are (fp32 on CPU, CUDA if present).
    `optimize=True` (with auto_config) also applies the planner's measured CPU speed-up: int4 decoding copies of
    Linear layers whose weights are exactly 4-bit (a GGUF's), used for single streams (`plan.cpu_int4_decode`);
    `optimize=False` keeps plain fp32. `generation` replaces the generation defaults (the seed table:
    max_new_tokens=100, temperature=0.7, top_p=0.9, top_k=50, repetition_penalty=1.0, do_sample=True).

    Loading options of Transformers' `from_pretrained` / `AutoConfig`: `config_overrides` (values set on the
    model's config before loading, each key must exist there), `num_labels` (a classification head's outputs),
    `init="random"` (build the architecture from its config with random weights; `model_id` may then be a
    config.json file or a folder holding one, plus a tokenizer), `dtype="checkpoint"` (the weights' stored
    dtype), `device_map="cpu"` (everything on one device). `quantization_strict=True` makes an int8/int4 that
    cannot be honoured an error instead of an unquantized load with a warning.
    """

    def __init__(
        self,
        model_id: str = source.BUNDLED,
        auto_config: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        quantization: str | None = None,
        trust_remote_code: bool = False,
        model_type: str | None = None,
        attn_implementation: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[str, str] | None = None,
        low_cpu_mem_usage: bool = True,
        revision: str | None = None,
        cache_dir: str | None = None,
        gguf_file: str | None = None,
        allow_pickle: bool = False,
        batch_size: int | None = None,
        num_threads: int | None = None,
        *,
        generation: GenerationConfig | None = None,
        optimize: bool = True,
        config_overrides: dict[str, Any] | None = None,
        num_labels: int | None = None,
        init: str = ModelInit.pretrained,
        quantization_strict: bool = False,
    ) -> None:
        model = ModelConfig(
            name=model_id,
            model_type=model_type,
            revision=revision,
            gguf_file=gguf_file,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            attn_implementation=attn_implementation,
            low_cpu_mem_usage=low_cpu_mem_usage,
            cache_dir=cache_dir,
            config_overrides=config_overrides,
            num_labels=num_labels,
            init=parse_choice("init", ModelInit, init),
        )
        hardware = HardwareConfig(
            backend=Backend.transformers,
            optimize=optimize,
            device=parse_choice("device", Device, device),
            dtype=parse_choice("dtype", DType, dtype),
            quantization=None if quantization is None else parse_choice("quantization", Quantization, quantization),
            quantization_strict=quantization_strict,
            device_map=device_map,
            max_memory=max_memory,
            num_threads=num_threads,
        )
        model.validate()
        hardware.validate()
        super().__init__(model, hardware, generation=generation, batch_size=batch_size, auto_config=auto_config)

    # ------------------------------------------------------------------ the non-generation tasks, in Python
    def embed(self, texts: list[str], *, pooling: str = "mean", normalize: bool = True) -> list[list[float]]:
        """One vector per text (task=embed): `pooling` mean / cls / last, unit length when `normalize`."""
        options = {"pooling": parse_choice("pooling", Pooling, pooling), "normalize": normalize}
        answers = self.run_task(TaskName.embed, [{"prompt": t} for t in texts], **options)
        return [a.result["embedding"] for a in answers]

    def classify(self, texts: list[str], *, top_k: int = 5) -> list[dict[str, Any]]:
        """`{label, score, scores}` per text (task=classify)."""
        return [a.result for a in self.run_task(TaskName.classify, [{"prompt": t} for t in texts], top_k=top_k)]

    def tag(self, texts: list[str], *, aggregation: str = "simple") -> list[list[dict[str, Any]]]:
        """The entities of each text (task=token_classify): `{entity, word, start, end, score}`."""
        options = {"aggregation": parse_choice("aggregation", Aggregation, aggregation)}
        answers = self.run_task(TaskName.token_classify, [{"prompt": t} for t in texts], **options)
        return [a.result["entities"] for a in answers]

    def answer(self, question: str, context: str) -> dict[str, Any]:
        """The answer span of `context` (task=qa): `{answer, score, start, end}`."""
        return self.run_task(TaskName.qa, [{"question": question, "context": context}])[0].result

    def fill_mask(self, texts: list[str], *, top_k: int = 5) -> list[Any]:
        """The likeliest tokens for the mask token of each text (task=fill_mask)."""
        answers = self.run_task(TaskName.fill_mask, [{"prompt": t} for t in texts], top_k=top_k)
        return [a.result["predictions"] for a in answers]

    def rerank(self, query: str, documents: list[str]) -> dict[str, Any]:
        """`{scores, ranking}` of `documents` for `query` (task=rerank)."""
        return self.run_task(TaskName.rerank, [{"query": query, "documents": documents}])[0].result

    def run_task(self, task: TaskName, items: list[dict[str, Any]], **options: Any) -> list[Answer]:
        """Any non-generation task over `items` (a record's fields; `image` / `audio` as paths or values), with
        `TaskConfig` options; loads the head the task needs (reloading when another head is loaded)."""
        self._serve(TaskName(task))
        return self.analyze(task, items, task_config(task, **options), self.default_generation)

    def _serve(self, task: TaskName) -> None:
        """Load the head `task` needs, unloading another head first."""
        if self.task != task or self.head is None:
            if self.is_loaded:
                self.unload_model()
            self.check_task(task)
        self.load_model()

    def _loaded(self) -> tuple[Any, Any, ModelType]:
        """Generation after another task (`embed` on a causal LM loads its base model, which cannot generate)
        reloads the generation head first."""
        if self.is_loaded and self.head is not None and self.head.family != capabilities.GENERATE:
            self._serve(TaskName.generate)
        return super()._loaded()
