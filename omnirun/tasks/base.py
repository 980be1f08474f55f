"""What every generation task shares: the task context, preparing a record (template, parameters, token
count, context check) and turning a completion into an outputs.jsonl row."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TextIO

from omnirun.choices import Overflow, TemplateMode
from omnirun.config import GenerationConfig, RunConfig, TaskConfig
from omnirun.distributed import Rank
from omnirun.engine.base import Completion, Engine
from omnirun.errors import ConfigError, InputError, first_line
from omnirun.hardware import HardwareInfo
from omnirun.inputs import Inputs, Record
from omnirun.results.schema import ResultRow, RunMetrics
from omnirun.results.writer import ResultWriter
from omnirun.rundir import RunDir

log = logging.getLogger(__name__)

UNEXPLAINED_LIMIT = 3
"""A failure is a record's own unless this many different records fail alone, for reasons their inputs do not
explain, before any record of the run succeeds: then the model (or the server) is broken and the run stops.
Where a failing record sorts (first or later) does not matter."""
WINDOW_BATCHES = 8
"""Records are reordered by length within windows of this many batches, then written in input order."""


class Progress(Protocol):
    def update(self, samples: int, tokens: int) -> None: ...


@dataclass
class Job:
    """Everything a task needs to run one job into its run directory."""

    cfg: RunConfig
    run: RunDir
    engine: Engine
    data: Inputs
    info: HardwareInfo
    config_sha: str
    started: float
    """perf_counter() at the start of the run (total_s counts from here)."""
    skipped: int = 0
    """Records finished by an earlier attempt (a resumed run)."""
    rank: Rank | None = None
    window: int = 0
    """The batching window of an earlier attempt (a resumed run keeps it); 0 for a new run."""
    summarize_scores: bool = True
    """Score the run's outputs.jsonl into metrics.json at the end (`task.score`); false for a part of a run
    (a cluster worker's batch), whose driver scores the whole run."""

    @property
    def main(self) -> bool:
        return self.rank is None or self.rank.is_main

    def write_manifest(self, window: int = 1) -> None:
        """manifest.json: versions, hardware, the plan with its reasons, the resolved model, the input."""
        engine = self.engine
        params = engine.parameters()
        self.run.write_manifest(
            {
                "hardware": self.info,
                "plan": engine.plan,
                "model": {
                    "name": self.cfg.model.name,
                    "resolved": engine.source,
                    "model_type": engine.model_type,
                    "num_parameters": params.total if params else None,
                    "trainable_parameters": params.trainable if params else None,
                },
                "seed": self.cfg.seed,
                "input": {
                    "source": self.data.source,
                    "fingerprint": self.data.fingerprint,
                    "num_records": len(self.data.records),
                },
                "config_sha256": self.config_sha,
                "window": window,
            }
        )


class Task(Protocol):
    """A task runs a job and returns its metrics (the runner writes them)."""

    def __call__(self, job: Job) -> RunMetrics: ...


@dataclass
class TaskContext:
    task: TaskConfig
    generation: GenerationConfig
    seed: int
    batch_size: int
    writer: ResultWriter
    echo: bool = False
    """Print each answer to stdout (single-prompt runs)."""
    out: TextIO = field(default_factory=lambda: sys.stdout)
    """Where answers are printed; sys.stdout as it is when the context is made (not when omnirun is imported)."""
    window: int = 0
    """Records prepared, generated and written together; 0: WINDOW_BATCHES batches of `batch_size`."""
    succeeded: int = 0
    """Records generated without error so far in this run."""
    unexplained: int = 0
    """Records that failed alone, before any record succeeded, for a reason their input does not explain."""
    model_s: float = 0.0
    """The summed wall time of the model's calls so far (`engine.generate` / `analyze`, a stream's tokens)."""
    finish: Callable[[ResultRow, str | None], ResultRow] = field(default=lambda row, prompt: row)
    """Applied to each generated row with its prompt text before it is written (`omnirun.tasks.finish`: the
    thinking split from the answer, `task.score`)."""

    def __post_init__(self) -> None:
        self.window = self.window or self.batch_size * WINDOW_BATCHES


@dataclass
class Prepared:
    record: Record
    text: str = ""
    add_special_tokens: bool = True
    params: GenerationConfig | None = None
    n_tokens: int = 0
    error: str | None = None


def prepare_one(engine: Engine, record: Record, ctx: TaskContext, *, chat: bool) -> Prepared:
    """Render a record to prompt text, resolve its generation parameters, count its tokens and fit it into the
    model's context. Anything that goes wrong is about this record only and becomes its error."""
    item = Prepared(record, error=record.error)
    if item.error is not None:
        return item
    try:
        # the run's own settings are validated once; only a record's overrides need checking (a copy each)
        params = ctx.generation.with_overrides(record.overrides, prefix="") if record.overrides else ctx.generation
        item.text, item.add_special_tokens = render(engine, record, ctx.task, chat=chat)
        item.n_tokens = engine.count_tokens(item.text, item.add_special_tokens)
        item.params = fit_context(params, item.n_tokens, engine.max_context, ctx.task.overflow, record.id)
    except Exception as exc:  # a template the model rejects, a text the tokenizer cannot encode, ...
        item.error = record_error(record, exc)
    return item


def unexplained_failure(ctx: TaskContext, exc: BaseException, about_input: bool) -> bool:
    """Count a record that failed alone; True when the run should stop (`UNEXPLAINED_LIMIT` different records
    failed before any success and none of those failures is about its input)."""
    if ctx.succeeded or about_input:
        return False
    ctx.unexplained += 1
    return ctx.unexplained >= UNEXPLAINED_LIMIT


def fit_context(
    params: GenerationConfig, prompt_tokens: int, context: int | None, overflow: Overflow, record_id: str
) -> GenerationConfig:
    """The parameters with max_new_tokens cut to what the context leaves after the prompt (`clip`), or a
    RecordError when the prompt alone fills the context or `task.overflow=error` and it does not fit."""
    if not context:
        return params
    room = context - prompt_tokens
    if room < 1:
        raise RecordError(f"prompt has {prompt_tokens} tokens; the model's context is {context}")
    if params.max_new_tokens <= room:
        return params
    if overflow == Overflow.error:
        raise RecordError(
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the model's "
            f"context ({context}); lower max_new_tokens or set task.overflow=clip"
        )
    log.warning(
        "record %s: prompt (%d tokens) + max_new_tokens (%d) exceeds the context (%d); generating at most %d",
        record_id,
        prompt_tokens,
        params.max_new_tokens,
        context,
        room,
    )
    min_new = params.min_new_tokens if params.min_new_tokens is None else min(params.min_new_tokens, room)
    return replace(params, max_new_tokens=room, min_new_tokens=min_new)


class RecordError(ValueError):
    """A problem with one record (it becomes that record's error row)."""


def record_error(record: Record, exc: BaseException) -> str:
    """The error row's message: the record, the exception's type (unless it is our own) and its first line."""
    text = first_line(str(exc)) or type(exc).__name__
    kind = "" if isinstance(exc, RecordError | ConfigError | InputError) else f"{type(exc).__name__}: "
    return f"record {safe_text(record.id)}: {kind}{safe_text(text)[:300]}"


def safe_text(text: str) -> str:
    """`text` with lone surrogates escaped, so that it can always be written as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def render(engine: Engine, record: Record, task: TaskConfig, *, chat: bool) -> tuple[str, bool]:
    """Prompt text and whether the tokenizer should add special tokens (not for chat-templated text)."""
    messages = record.messages
    use_template = chat or messages is not None or task.chat_template == TemplateMode.always
    if not use_template and task.chat_template == TemplateMode.auto:
        use_template = engine.has_chat_template()
    if record.template is not None and messages is None and not chat:
        use_template = record.template
    if not use_template:
        return record.prompt or "", True
    if messages is None:
        messages = [{"role": "user", "content": record.prompt or ""}]
    if task.system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": task.system_prompt}, *messages]
    return engine.render_chat(messages), False


def row(
    record: Record, completion: Completion | None, error: str | None, params: GenerationConfig | None = None
) -> ResultRow:
    """One outputs.jsonl line: the record's input and its completion, or its error; `params` (the record's
    generation settings) tell the metrics which output format it was asked for."""
    base = ResultRow(id=record.id, prompt=record.prompt, messages=record.messages, fields=record.carried)
    base.response_format = params.response_format if params is not None else None
    if completion is None:
        base.error = error
        return base
    ttft = completion.ttft_s
    n = completion.output_tokens
    base.output = completion.text
    base.input_tokens = completion.input_tokens
    base.output_tokens = n
    base.finish_reason = completion.finish_reason
    base.ttft_ms = ttft * 1000 if ttft is not None else None
    base.tpot_ms = (completion.e2e_s - ttft) / (n - 1) * 1000 if ttft is not None and n > 1 else None
    base.e2e_ms = completion.e2e_s * 1000
    base.token_ids = completion.token_ids
    base.reasoning, base.reasoning_tokens = completion.reasoning, completion.reasoning_tokens
    return base


def emit(ctx: TaskContext, result: ResultRow) -> None:
    ctx.writer.write(result)
    if ctx.echo:
        print(result.output if result.error is None else f"error: {result.error}", file=ctx.out)
