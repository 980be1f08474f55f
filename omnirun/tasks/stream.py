"""`stream`: one record at a time, pieces printed as they come, per-token timestamps recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from omnirun.engine.base import Engine
from omnirun.inputs import Record
from omnirun.results.schema import ResultRow
from omnirun.tasks.base import Prepared, Progress, TaskContext, prepare_one, record_error, row

log = logging.getLogger(__name__)


def run_stream(engine: Engine, records: Iterable[Record], ctx: TaskContext, progress: Progress) -> None:
    """One record at a time; each piece is printed as soon as it is decoded. A record that fails (a template,
    a parameter the stream cannot honour, ...) becomes its error row and the next one goes on."""
    for record in records:
        item = prepare_one(engine, record, ctx, chat=False)
        result = row(record, None, item.error) if item.error is not None else stream_one(engine, item, ctx)
        ctx.writer.write(result)
        ctx.writer.flush()
        progress.update(1, result.output_tokens or 0)


def stream_one(engine: Engine, item: Prepared, ctx: TaskContext) -> ResultRow:
    assert item.params is not None
    start = time.perf_counter()
    try:
        stream = engine.stream_tokens(
            item.text, item.params, add_special_tokens=item.add_special_tokens, seed=ctx.seed + item.record.index
        )
        for piece in stream:
            ctx.out.write(piece)
            ctx.out.flush()
    except Exception as exc:
        return row(item.record, None, record_error(item.record, exc))
    finally:
        ctx.model_s += time.perf_counter() - start
        ctx.out.write("\n")
    assert stream.completion is not None
    result = ctx.finish(row(item.record, stream.completion, None, item.params), item.text)
    result.token_times_ms = [t * 1000 for t in stream.completion.token_times_s]
    return result
