"""The tasks: each runs a job (records or a measured workload) with an engine and returns the run's metrics.

Adding a task is a module here plus one line in `TASKS`; a per-record task only writes the function that
handles a list of records (see `tasks.generate`) and wraps it in `RecordsTask`.
"""

from __future__ import annotations

from omnirun.config import TaskName
from omnirun.inputs.records import InputSpec
from omnirun.tasks.analysis import SPECS, run_analysis, spec_for
from omnirun.tasks.base import WINDOW_BATCHES, Job, Task, TaskContext
from omnirun.tasks.benchmark import run_benchmark
from omnirun.tasks.export import run_export
from omnirun.tasks.generate import run_chat, run_generate
from omnirun.tasks.records import RecordsTask
from omnirun.tasks.stream import run_stream

TASKS: dict[TaskName, Task] = {
    TaskName.generate: RecordsTask(run_generate),
    TaskName.batch: RecordsTask(run_generate),
    TaskName.chat: RecordsTask(run_chat, needs_chat_template=True),
    TaskName.stream: RecordsTask(run_stream, windowed=False),
    TaskName.benchmark: run_benchmark,
    TaskName.export: run_export,
}
for _name in SPECS:  # embed, classify, ..., caption, image: one shape, the task's InputSpec apart
    TASKS[_name] = RecordsTask(run_analysis, inputs=spec_for(_name))

__all__ = ["TASKS", "WINDOW_BATCHES", "Job", "Task", "TaskContext", "input_spec"]


def input_spec(task: TaskName) -> InputSpec | None:
    """The fields a task reads from each record; None: a generation task (prompt or messages)."""
    runner = TASKS[task]
    return runner.inputs if isinstance(runner, RecordsTask) else None
