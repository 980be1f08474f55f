"""`generate` / `batch`: one completion per record; `chat`: records are conversations rendered by the
model's chat template (a plain prompt becomes one user turn)."""

from __future__ import annotations

from collections.abc import Iterable

from omnirun.engine.base import Engine
from omnirun.inputs import Record
from omnirun.tasks.base import Progress, TaskContext
from omnirun.tasks.batching import run_batches


def run_generate(engine: Engine, records: Iterable[Record], ctx: TaskContext, progress: Progress) -> None:
    run_batches(engine, records, ctx, progress, chat=False)


def run_chat(engine: Engine, records: Iterable[Record], ctx: TaskContext, progress: Progress) -> None:
    run_batches(engine, records, ctx, progress, chat=True)
