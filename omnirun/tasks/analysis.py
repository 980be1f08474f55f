"""The non-generation tasks (embed, classify, token_classify, qa, fill_mask, rerank, image_classify, detect,
segment, audio_classify, transcribe, caption, image): records in windows, each window in batches through
`engine.analyze`, rows written in input order. A batch that fails is retried record by record, so a corrupt
image or a text without a mask token becomes that record's error row and the others are answered.

Each task's inputs are an `InputSpec` in its `TaskSpec` (`tasks.specs`): the fields `inputs.read` validates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omnirun import rundir
from omnirun.config import TaskName
from omnirun.engine.base import Answer, Engine
from omnirun.errors import InputError
from omnirun.inputs import Record
from omnirun.inputs.media import describe
from omnirun.inputs.records import MEDIA_FIELDS
from omnirun.results.schema import ResultRow
from omnirun.task_config import ImageConfig
from omnirun.tasks.base import Progress, TaskContext, record_error, unexplained_failure
from omnirun.tasks.batching import windows, write_finished

Answerer = Callable[[Engine, list[dict[str, Any]], TaskContext, list[int]], list[Answer]]
"""How a per-record task answers a batch: (engine, the records' fields, the context, one seed per record:
`seed + record index`) -> one `Answer` per item, in order."""


def analyze(engine: Engine, items: list[dict[str, Any]], ctx: TaskContext, seeds: list[int]) -> list[Answer]:
    """The built-in tasks beyond generation: the engine's `analyze`."""
    return engine.analyze(TaskName(ctx.task.name), items, ctx.task, ctx.generation, seeds)


def run_analysis(
    engine: Engine, records: Iterable[Record], ctx: TaskContext, progress: Progress, answer: Answerer = analyze
) -> None:
    """Answer the records window by window (one window held at a time); on Ctrl-C the window's finished rows
    are written, then it goes on."""
    for window in windows(records, ctx.window):
        done: dict[int, ResultRow] = {}
        try:
            run_window(engine, window, ctx, progress, done, answer)
        except KeyboardInterrupt:
            write_finished(ctx, window, done)
            raise
        write_finished(ctx, window, done)


def run_window(
    engine: Engine,
    window: list[Record],
    ctx: TaskContext,
    progress: Progress,
    done: dict[int, ResultRow],
    answer: Answerer = analyze,
) -> None:
    for record in window:
        if record.error is not None:
            done[record.index] = task_row(record, None, record.error, ctx)
    progress.update(len(done), 0)
    runnable = [r for r in window if r.error is None]
    if ctx.task.sort_by_length:
        runnable.sort(key=lambda r: len(r.prompt or "") + len(r.fields.get("context", "")))
    for i in range(0, len(runnable), ctx.batch_size):
        batch = runnable[i : i + ctx.batch_size]
        for record, found, error in answer_isolated(engine, batch, ctx, answer):
            done[record.index] = task_row(record, found, error, ctx)
        progress.update(len(batch), 0)


Result = tuple[Record, Answer | None, str | None]


def answer_isolated(engine: Engine, batch: list[Record], ctx: TaskContext, answer: Answerer = analyze) -> list[Result]:
    """One `engine.analyze` call for the batch; when it fails, each record alone, so the failure lands on the
    records that cause it. A record's failure is its own wherever it sorts; only `UNEXPLAINED_LIMIT` different
    records failing before any success, for reasons their inputs do not explain, stop the run (a broken
    model)."""
    start = time.perf_counter()
    try:
        try:
            answers = answer(engine, [item(r) for r in batch], ctx, [ctx.seed + r.index for r in batch])
        finally:
            ctx.model_s += time.perf_counter() - start
        seconds = time.perf_counter() - start
        for a in answers:
            a.e2e_s = a.completion.e2e_s if a.completion is not None else a.e2e_s or seconds
        results: list[Result] = [(r, a, None) for r, a in zip(batch, answers, strict=True)]
    except Exception as exc:
        if len(batch) == 1:
            if unexplained_failure(ctx, exc, about_the_input(exc)):
                raise
            results = [(batch[0], None, record_error(batch[0], exc))]
        else:
            results = [r for record in batch for r in answer_isolated(engine, [record], ctx, answer)]
    ctx.succeeded += sum(a is not None for _, a, _ in results)
    return results


def about_the_input(exc: BaseException) -> bool:
    """An error that names the record's own input (an unreadable file, a text a pipeline rejects, such as one
    without a mask token), as opposed to a broken model."""
    return isinstance(exc, InputError) or type(exc).__name__ == "PipelineException"


def item(record: Record) -> dict[str, Any]:
    """A record's task inputs as the engine takes them."""
    out: dict[str, Any] = dict(record.fields)
    if record.prompt is not None:
        out["prompt"] = record.prompt
    return out


def echo(record: Record) -> dict[str, Any]:
    """The input fields written into the row (an image or audio value as its path)."""
    out: dict[str, Any] = {}
    if record.prompt is not None:
        out["prompt"] = record.prompt
    for name, value in record.fields.items():
        out[name] = describe(value) if name in MEDIA_FIELDS else value
    if record.url is not None:
        out["url"] = record.url
    return out


def task_row(record: Record, answer: Answer | None, error: str | None, ctx: TaskContext) -> ResultRow:
    """One outputs.jsonl row of a non-generation task; images in the answer are saved as PNGs first."""
    row = ResultRow(id=record.id, inputs=echo(record), fields=record.carried)
    if answer is None:
        row.error = error
        return row
    result = dict(answer.result)
    for key, images in answer.images.items():
        result[key] = save_images(ctx, record, key, images)
    row.result, row.input_tokens, row.audio_s = result, answer.input_tokens, answer.audio_s
    c = answer.completion
    if c is not None:
        row.output, row.output_tokens, row.finish_reason = c.text, c.output_tokens, c.finish_reason
        row.input_tokens = row.input_tokens if row.input_tokens is not None else c.input_tokens
    row.e2e_ms = answer.e2e_s * 1000 if answer.e2e_s is not None else None
    if isinstance(ctx.task, ImageConfig):
        row.denoising_steps = ctx.task.num_inference_steps
    return row


def save_images(ctx: TaskContext, record: Record, key: str, images: list[Any]) -> list[str]:
    """PNG files `<key>/<record index>-<n>.png` under the run directory; their paths relative to it."""
    run_dir = ctx.writer.path.parent
    folder = run_dir / key
    folder.mkdir(exist_ok=True)
    paths = []
    for n, image in enumerate(images):
        path = folder / f"{record.index:08d}-{n}.png"
        image.save(path, format="PNG")
        paths.append(str(path.relative_to(run_dir)))
    return paths


def write_embeddings_npy(run_dir: Path, rows_path: Path) -> Path:
    """embeddings.npy: one row per record of outputs.jsonl, in input order (float32; NaN for error rows)."""
    import numpy as np

    vectors: list[list[float] | None] = []
    for line in rows_path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            vectors.append(json.loads(line).get("embedding"))
    dim = next((len(v) for v in vectors if v), 0)
    out = np.full((len(vectors), dim), np.nan, dtype=np.float32)
    for i, v in enumerate(vectors):
        if v:
            out[i] = v
    path = run_dir / rundir.EMBEDDINGS_NPY
    np.save(path, out)
    return path
