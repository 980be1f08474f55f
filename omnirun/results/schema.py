"""What a run writes, as types: one outputs.jsonl row (`ResultRow`), the run's metrics (`RunMetrics`) and a
benchmark report (`BenchmarkReport`). Each has `to_json()` / `from_json()`; code reads fields, never string
keys. The JSON field names are the documented file formats (README, metric definitions) and do not change.

Definitions (also in the README):
- `ttft_ms`: time to first token, from the start of the `generate` call that served a record until its
  first new token existed. Records batched together share their batch's value.
- `tpot_ms`: time per output token after the first, `(e2e - ttft) / (output_tokens - 1)` (vLLM's TPOT).
- `e2e_ms`: end-to-end latency of the `generate` call that served a record (queueing excluded).
- `output_tokens_per_s`: total output tokens / wall time of the generation phase (model load excluded).
- `max_rss_mb`: peak resident memory of the process during the run (20 ms sampler plus VmHWM).
- `model_s`: the summed wall time of the model's own calls (`engine.generate` / `analyze` / a stream), so
  `total_s - load_model_s - model_s` is what the runner itself spent (reading, preparing, writing).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnirun.results.writer import RunTotals

SCHEMA_VERSION = 1


class Status(StrEnum):
    completed = "completed"
    failed = "failed"
    interrupted = "interrupted"


def quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty list."""
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    """mean and percentiles (linear interpolation) of a set of values."""

    mean: float
    p50: float
    p90: float
    p99: float

    @staticmethod
    def of(values: list[float]) -> Stats | None:
        if not values:
            return None
        xs = sorted(values)
        return Stats(statistics.fmean(xs), quantile(xs, 0.5), quantile(xs, 0.9), quantile(xs, 0.99))

    @staticmethod
    def from_json(obj: dict[str, Any] | None) -> Stats | None:
        return None if obj is None else Stats(obj["mean"], obj["p50"], obj["p90"], obj["p99"])

    def scaled(self, factor: float) -> Stats:
        return Stats(self.mean * factor, self.p50 * factor, self.p90 * factor, self.p99 * factor)


@dataclass
class ResultRow:
    """One line of outputs.jsonl: a record's input, its output or its error, and its timings."""

    id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    output: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    """`stop` (end-of-sequence produced) or `length` (max_new_tokens reached)."""
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    error: str | None = None
    token_times_ms: list[float] | None = None
    """task=stream only: when each new token was produced, from the call's start."""
    token_ids: list[int] | None = None
    """Not written; kept in memory for comparisons that need the exact tokens."""
    response_format: dict[str, Any] | None = None
    """Not written: the output format the record asked for (`generation.response_format`), for `valid_rate`."""
    inputs: dict[str, Any] | None = None
    """A non-generation task's input fields, echoed (`prompt`, `question`, `image` path, ...); set for every
    row of such a task, which is how a row says it is one."""
    result: dict[str, Any] | None = None
    """A non-generation task's answer fields (`embedding`, `label`, `scores`, `entities`, `answer`, ...)."""
    audio_s: float | None = None
    """task=transcribe / audio_classify: the input's duration in seconds."""
    denoising_steps: int | None = None
    """task=image: the denoising steps run for this record."""
    reasoning: str | None = None
    """A reasoning model's thinking, split from `output` (`generation.reasoning=split`); written only when set."""
    reasoning_tokens: int | None = None
    """The output tokens spent thinking (part of `output_tokens`); written only when the output was split."""
    fields: dict[str, Any] | None = None
    """The input record's other fields (not model inputs: a reference answer, a category, a source id), written
    under `fields` so that a run directory can be scored later (`task=score`), joined by nothing."""
    scores: dict[str, Any] | None = None
    """`task.score` on a generation run, or task=score: this row's `{metric: value}`."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.inputs is not None:
            return self._task_json(out)
        if self.messages is not None:
            out["messages"] = self.messages
        else:
            out["prompt"] = self.prompt
        for name in ("output", "input_tokens", "output_tokens", "finish_reason", "ttft_ms", "tpot_ms", "e2e_ms"):
            out[name] = getattr(self, name)
        out["error"] = self.error
        if self.token_times_ms is not None:
            out["token_times_ms"] = self.token_times_ms
        return self._carried(out)

    def _carried(self, out: dict[str, Any]) -> dict[str, Any]:
        """The optional fields every kind of row may carry, last, only when set."""
        for name in ("reasoning", "reasoning_tokens", "fields", "scores"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def _task_json(self, out: dict[str, Any]) -> dict[str, Any]:
        """A non-generation row: id, the inputs, the answer fields, then the generation and timing fields that
        apply (caption generates text; the others have no output tokens)."""
        out.update(self.inputs or {})
        out.update(self.result or {})
        for name in ("output", "output_tokens", "finish_reason", "ttft_ms", "tpot_ms", "audio_s", "denoising_steps"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["input_tokens"], out["e2e_ms"], out["error"] = self.input_tokens, self.e2e_ms, self.error
        return self._carried(out)

    @staticmethod
    def from_json(obj: dict[str, Any]) -> ResultRow:
        names = {f.name for f in dataclasses.fields(ResultRow)} - {"token_ids", "inputs", "result", "response_format"}
        row = ResultRow(**{k: v for k, v in obj.items() if k in names})
        row.id = str(row.id)
        extra = {k: v for k, v in obj.items() if k not in names}
        if extra or ("prompt" not in obj and "messages" not in obj):  # a non-generation task's row
            row.inputs = {k: v for k, v in extra.items() if k in TASK_INPUT_FIELDS}
            row.result = {k: v for k, v in extra.items() if k not in TASK_INPUT_FIELDS}
        return row


TASK_INPUT_FIELDS = frozenset(
    {"text_pair", "question", "context", "query", "documents", "texts", "image", "audio", "negative_prompt", "url"}
)
"""The input fields a non-generation row may echo (the rest of its extra fields are its answer)."""


@dataclass
class MemoryMetrics:
    max_rss_mb: float | None = None
    max_cuda_allocated_mb: float | None = None
    max_cuda_reserved_mb: float | None = None
    model_footprint_mb: float | None = None


@dataclass
class BenchmarkHeadline:
    """task=benchmark: the headline throughputs copied into metrics.json (the full report is benchmark.json)."""

    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    samples_per_s: float | None
    generate_p50_ms: float
    unstable: bool


@dataclass
class RunMetrics:
    """metrics.json."""

    status: Status
    load_model_s: float | None = None
    total_s: float | None = None
    """Wall time of the whole run: input reading, model load, generation, writing."""
    generation_s: float | None = None
    """Wall time of the generation phase alone."""
    model_s: float | None = None
    """The summed wall time of the model's calls (`engine.generate` / `engine.analyze` / a stream's tokens):
    `total_s - load_model_s - model_s` is the runner's own time (reading, preparing, writing)."""
    num_samples: int = 0
    num_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_per_s: float | None = None
    ttft_ms: Stats | None = None
    tpot_ms: Stats | None = None
    e2e_ms: Stats | None = None
    memory: MemoryMetrics = field(default_factory=MemoryMetrics)
    resumed_records: int = 0
    """Records finished by earlier attempts of a resumed run; not counted in this run's figures."""
    num_parameters: int | None = None
    """The model's parameters (Transformers' `num_parameters()`; llama.cpp's `n_params`)."""
    trainable_parameters: int | None = None
    """Those with `requires_grad` (quantized weights are not); null where the backend has no such notion."""
    benchmark: BenchmarkHeadline | None = None
    valid_rate: dict[str, float] | None = None
    """Constrained runs: per format type (`json_object`, `json_schema`, `regex`), the share of outputs that
    follow their format (parse as JSON, validate against the schema, match the pattern); null without one."""
    samples_per_s: float | None = None
    """Records answered without error / generation_s (for `image`: images/s)."""
    input_tokens_per_s: float | None = None
    """Input tokens of the records answered / generation_s (text encoders: embed, classify, ...)."""
    audio_s: float | None = None
    """transcribe, audio_classify: seconds of audio in the records answered."""
    real_time_factor: float | None = None
    """transcribe, audio_classify: audio seconds processed per second of generation_s (>1: faster than real time)."""
    s_per_denoising_step: float | None = None
    """task=image: generation_s / the denoising steps run over all records."""
    reasoning_tokens: int | None = None
    """Output tokens spent thinking, over the rows whose output was split (`generation.reasoning`); null when none
    was."""
    scores: dict[str, Any] | None = None
    """task=score, or `task.score` on a generation run: `{scores: {metric: {mean, stderr, n, aggregate}}, by_group,
    rows, errors}` (`omnirun.scoring.ScoreSummary`: the mean of the rows' scores, or the corpus score for bleu /
    chrf; stderr by seeded bootstrap); null otherwise."""
    schema_version: int = SCHEMA_VERSION
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = to_jsonable(self)
        return out

    @staticmethod
    def from_json(obj: dict[str, Any]) -> RunMetrics:
        bench = obj.get("benchmark")
        return RunMetrics(
            status=Status(obj.get("status", "failed")),
            load_model_s=obj.get("load_model_s"),
            total_s=obj.get("total_s"),
            generation_s=obj.get("generation_s"),
            model_s=obj.get("model_s"),
            num_samples=obj.get("num_samples", 0),
            num_errors=obj.get("num_errors", 0),
            input_tokens=obj.get("input_tokens", 0),
            output_tokens=obj.get("output_tokens", 0),
            output_tokens_per_s=obj.get("output_tokens_per_s"),
            ttft_ms=Stats.from_json(obj.get("ttft_ms")),
            tpot_ms=Stats.from_json(obj.get("tpot_ms")),
            e2e_ms=Stats.from_json(obj.get("e2e_ms")),
            memory=MemoryMetrics(**(obj.get("memory") or {})),
            resumed_records=obj.get("resumed_records", 0),
            num_parameters=obj.get("num_parameters"),
            trainable_parameters=obj.get("trainable_parameters"),
            benchmark=BenchmarkHeadline(**bench) if bench else None,
            valid_rate=obj.get("valid_rate"),
            samples_per_s=obj.get("samples_per_s"),
            input_tokens_per_s=obj.get("input_tokens_per_s"),
            audio_s=obj.get("audio_s"),
            real_time_factor=obj.get("real_time_factor"),
            s_per_denoising_step=obj.get("s_per_denoising_step"),
            reasoning_tokens=obj.get("reasoning_tokens"),
            scores=obj.get("scores"),
            schema_version=obj.get("schema_version", SCHEMA_VERSION),
            error=obj.get("error"),
        )

    @staticmethod
    def load(path: Path) -> RunMetrics | None:
        return RunMetrics.from_json(json.loads(path.read_text())) if path.is_file() else None


def summarize(
    rows: RunTotals | Iterable[ResultRow],
    *,
    status: Status,
    load_model_s: float | None,
    total_s: float,
    generation_s: float,
    memory: MemoryMetrics,
    resumed_records: int = 0,
    error: str | None = None,
    model_s: float | None = None,
) -> RunMetrics:
    """Aggregate per-record results into run metrics: from `RunTotals` accumulated as the rows were written
    (what a run does: it keeps no rows), or from rows (accumulated here). Counts and totals are exact. The
    percentiles come from a bounded structure (`writer.Distribution`), not from a second pass over outputs.jsonl:
    exact percentiles from a second pass would still have to hold every value (or sort them on disk) and
    re-parse the whole file, and a resumed run's figures cover only its own rows, which the accumulator sees
    and a re-read would have to skip. The distribution is exact up to MAX_DISTINCT distinct values (records
    of a batch share one value, so that is ~20,000 batches) and within 0.1% past it, in bounded memory."""
    from omnirun.results.writer import RunTotals  # the writer accumulates them; it imports this module

    totals = rows if isinstance(rows, RunTotals) else RunTotals()
    if not isinstance(rows, RunTotals):
        for row in rows:
            totals.add(row)
    n_ok = totals.num_samples - totals.num_errors
    out_tokens, in_tokens = totals.output_tokens, totals.input_tokens
    timed = generation_s > 0 and n_ok > 0
    metrics = RunMetrics(
        status=status,
        load_model_s=load_model_s,
        total_s=total_s,
        generation_s=generation_s,
        model_s=model_s,
        num_samples=totals.num_samples,
        num_errors=totals.num_errors,
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        output_tokens_per_s=out_tokens / generation_s if timed else None,
        ttft_ms=totals.ttft_ms.stats(),
        tpot_ms=totals.tpot_ms.stats(),
        e2e_ms=totals.e2e_ms.stats(),
        memory=memory,
        resumed_records=resumed_records,
        reasoning_tokens=totals.reasoning_tokens,
        error=error,
    )
    if totals.valid:
        metrics.valid_rate = {kind: valid / total for kind, (valid, total) in totals.valid.items()}
    if timed and totals.task_rows:  # a non-generation task
        audio, steps = totals.audio_s, totals.denoising_steps
        metrics.samples_per_s = n_ok / generation_s
        metrics.input_tokens_per_s = in_tokens / generation_s if in_tokens else None
        metrics.audio_s = audio
        metrics.real_time_factor = audio / generation_s if audio else None
        metrics.s_per_denoising_step = generation_s / steps if steps else None
    return metrics


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, StrEnum):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
