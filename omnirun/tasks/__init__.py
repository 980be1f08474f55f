"""The tasks: each runs a job (records or a measured workload) with an engine and returns the run's metrics.

Adding a task is a module here plus one line in `TASKS`; a per-record task only writes the function that
handles a list of records (see `tasks.generate`) and wraps it in `RecordsTask`.
"""

from __future__ import annotations

from omnirun.config import TaskName
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

__all__ = ["TASKS", "WINDOW_BATCHES", "Job", "Task", "TaskContext"]
