"""The tasks: each runs a job (records or a measured workload) with an engine and returns the run's metrics.

Every task is an `omnirun.plugins.TaskSpec` registered through the `omnirun.tasks` entry points (the built-in
ones are in `tasks.specs`); a per-record task only writes the function that handles a list of records and wraps
it in `RecordsTask`. `TASKS[name]` is the runner of the installed task `name`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omnirun import plugins
from omnirun.engine.base import Answer, Engine
from omnirun.inputs.records import InputSpec
from omnirun.tasks.analysis import run_analysis
from omnirun.tasks.base import WINDOW_BATCHES, Job, Task, TaskContext
from omnirun.tasks.records import RecordsTask


class _Tasks(Mapping[str, plugins.Runner]):
    """The installed tasks' runners, by name (read from the entry points when first asked)."""

    def __getitem__(self, name: str) -> plugins.Runner:
        return plugins.task(name).run

    def __iter__(self) -> Iterator[str]:
        return iter(plugins.tasks())

    def __len__(self) -> int:
        return len(plugins.tasks())


TASKS: Mapping[str, plugins.Runner] = _Tasks()

__all__ = ["TASKS", "WINDOW_BATCHES", "Job", "RecordsTask", "Task", "TaskContext", "input_spec", "per_record"]


def per_record(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> RecordsTask:
    """A task's runner from a function of one record's fields (`prompt` and the fields its `InputSpec` names) to
    its row's result fields. The records are read lazily, windowed and batched by `task.batch_size`, written in
    input order as they finish, and a record the function raises on becomes its own error row: the same loop
    every built-in per-record task runs (`tasks.analysis.run_analysis`)."""

    def answer(engine: Engine, items: list[dict[str, Any]], ctx: TaskContext, seeds: list[int]) -> list[Answer]:
        return [Answer(fn(item)) for item in items]

    return RecordsTask(functools.partial(run_analysis, answer=answer))


def input_spec(task: str) -> InputSpec | None:
    """The fields a task reads from each record; None: a generation task (prompt or messages)."""
    return plugins.task(task).inputs
