"""Batched generation: windows of batches grouped by parameters and length, written in input order;
a batch that runs out of memory is halved and retried."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

from omnirun.engine.base import Completion, Engine
from omnirun.errors import InputError, first_line
from omnirun.inputs import Record
from omnirun.results.schema import ResultRow
from omnirun.tasks.base import (
    Prepared,
    Progress,
    TaskContext,
    emit,
    prepare_one,
    record_error,
    row,
    unexplained_failure,
)

log = logging.getLogger(__name__)


def run_batches(engine: Engine, records: Iterable[Record], ctx: TaskContext, progress: Progress, *, chat: bool) -> None:
    """Generate window by window (`ctx.window` records, aligned to input positions so that a resumed run forms
    the same batches): prepare the window's records, generate them in batches of `ctx.batch_size` grouped by
    parameters and length, and write the window in input order. Only one window of records is held: they are
    read from `records` as the windows go. On Ctrl-C, the finished records of the current window are written
    too (in input order) before the interrupt goes on."""
    for window in windows(records, ctx.window):
        done: dict[int, ResultRow] = {}
        try:
            run_window(engine, window, ctx, progress, done, chat=chat)
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
    *,
    chat: bool,
) -> None:
    items = [prepare_one(engine, record, ctx, chat=chat) for record in window]
    for item in items:
        if item.error is not None:
            done[item.record.index] = row(item.record, None, item.error)
    progress.update(len(done), 0)
    runnable = [i for i in items if i.error is None]
    for batch in plan_batches(runnable, lambda: ctx.batch_size, ctx.task.sort_by_length):
        results = generate_isolated(engine, batch, ctx)
        for item, completion, error in results:
            done[item.record.index] = ctx.finish(row(item.record, completion, error, item.params), item.text)
        progress.update(len(batch), sum(c.output_tokens for _, c, _ in results if c is not None))


def windows(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """`records` in lists of `size` (the last may be shorter), read as they are needed."""
    it = iter(records)
    while window := list(itertools.islice(it, size)):
        yield window


def write_finished(ctx: TaskContext, window: list[Record], done: dict[int, ResultRow]) -> None:
    for record in window:
        if record.index in done:
            emit(ctx, done[record.index])
    ctx.writer.flush()


Result = tuple[Prepared, Completion | None, str | None]


def generate_isolated(engine: Engine, batch: list[Prepared], ctx: TaskContext) -> list[Result]:
    """`generate_or_split`, and when a batch fails for a reason other than memory, each record alone, so that
    the failure lands on the records that cause it, wherever they sort; only `UNEXPLAINED_LIMIT` different
    records failing before any success stop the run (a broken model or server)."""
    try:
        results, _ = generate_or_split(engine, batch, ctx)
    except Exception as exc:
        if len(batch) == 1:
            if unexplained_failure(ctx, exc, isinstance(exc, InputError)):
                raise
            results = [(batch[0], None, record_error(batch[0].record, exc))]
        else:
            results = [r for item in batch for r in generate_isolated(engine, [item], ctx)]
    ctx.succeeded += sum(c is not None for _, c, _ in results)
    return results


def generate_or_split(
    engine: Engine, batch: list[Prepared], ctx: TaskContext, top: bool = True
) -> tuple[list[Result], int]:
    """Generate a batch; if it runs out of memory, free what the failed attempt held, split the batch in halves
    and retry each. Returns the results and the largest batch size that worked (0 if none); after an OOM,
    `ctx.batch_size` drops to that size for the rest of the run. A record that fails even alone gets an error
    line. Other exceptions propagate."""
    first = batch[0]
    assert first.params is not None
    oom: str | None = None
    start = time.perf_counter()
    try:
        completions = engine.generate(
            [i.text for i in batch],
            first.params,
            add_special_tokens=first.add_special_tokens,
            seed=ctx.seed + first.record.index,
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        oom = first_line(str(exc)) or type(exc).__name__
        del exc  # the traceback holds the failed attempt's tensors: drop it before retrying
    finally:
        ctx.model_s += time.perf_counter() - start
    if oom is None:
        return [(item, c, None) for item, c in zip(batch, completions, strict=True)], len(batch)
    free_memory()
    if len(batch) == 1:
        return [(first, None, f"record {first.record.id}: out of memory even alone ({oom[:200]})")], 0
    half = len(batch) // 2
    left, ok_left = generate_or_split(engine, batch[:half], ctx, top=False)
    right, ok_right = generate_or_split(engine, batch[half:], ctx, top=False)
    worked = max(ok_left, ok_right)
    if top and 0 < worked < ctx.batch_size:
        log.warning("out of memory at batch size %d; continuing with %d", len(batch), worked)
        ctx.batch_size = worked
    return left + right, worked


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or a CPU allocator failure."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def plan_batches(items: list[Prepared], size: Callable[[], int], sort: bool) -> Iterator[list[Prepared]]:
    """Batches of items that share generation params and special-token handling, shortest first if `sort`.
    `size()` is asked before each batch, so a batch size lowered after an OOM applies at once."""
    groups: dict[tuple[Any, ...], list[Prepared]] = {}
    keys: dict[int, str] = {}  # by identity: records without overrides share the run's parameters object
    for item in items:
        assert item.params is not None  # prepared without error
        key = keys.get(id(item.params))
        if key is None:
            key = keys[id(item.params)] = json.dumps(asdict(item.params), default=str)  # a dict inside
        groups.setdefault((key, item.add_special_tokens), []).append(item)
    for group in groups.values():
        ordered = sorted(group, key=lambda i: i.n_tokens) if sort else group
        i = 0
        while i < len(ordered):
            n = size()
            yield ordered[i : i + n]
            i += n
