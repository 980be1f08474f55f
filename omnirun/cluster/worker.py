"""One cluster worker: a process that holds one engine, built from the run's config by the same `engine.build` a
single process uses, and runs batches of records through the task's own per-record code.

The batch runs as a small run of its own (`TASKS[name]` on a `Job` whose input is the batch, written into a
scratch run directory), so error rows, overflow rules, batching, seeds and row fields are exactly those of a
single-process run. The engine stays loaded between batches. Nothing here imports Ray: the driver
(`cluster.ray_run`) wraps `Worker` into an actor.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omnirun import hardware, plugins, rundir
from omnirun.config import EmbeddingsFormat, RunConfig
from omnirun.inputs import Inputs, Record, Records
from omnirun.results import timing
from omnirun.results.schema import RunMetrics, to_jsonable
from omnirun.rundir import RunDir
from omnirun.tasks import TASKS, WINDOW_BATCHES, Job
from omnirun.tasks.records import RecordsTask

SOURCE = "cluster"
"""`Inputs.source` of a batch: not `prompt` (no echo), not `interactive`."""
FILE_FOLDERS = (rundir.IMAGES, rundir.MASKS)
"""Folders of files a row names (relative to the run directory); moved into the real run directory."""


@dataclass
class WorkerInfo:
    """What a started worker reports to the driver (plain values: it travels between processes)."""

    node: str
    """The worker's host name and IP address."""
    node_id: str
    """Ray's id of the worker's node."""
    pid: int
    batch_size: int
    """The model call's batch size: `task.batch_size`, or the plan's for `auto`."""
    window: int
    """Records prepared and batched together (the task's window; 1 for a task that takes one at a time)."""
    load_model_s: float
    plan: Any
    hardware: Any
    model: dict[str, Any]
    num_parameters: int | None
    trainable_parameters: int | None
    model_footprint_mb: float | None


@dataclass
class BatchResult:
    """A finished batch: its rows as outputs.jsonl lines (bytes, as the task's writer wrote them) and the times."""

    number: int
    lines: list[bytes]
    model_s: float
    generation_s: float
    max_rss_mb: float | None
    max_cuda_allocated_mb: float | None = None
    max_cuda_reserved_mb: float | None = None
    worker: str = ""
    files: list[str] = field(default_factory=list)


class BatchJob(Job):
    """A batch's job: the driver writes the run's manifest, so a batch writes none."""

    def write_manifest(self, window: int = 1) -> None:
        return None


class Worker:
    """Holds one loaded engine; `run_batch` turns a batch of records into their rows."""

    def __init__(self, cfg: RunConfig, run_path: str) -> None:
        from omnirun.runner import build_engine  # the runner imports this package's driver

        self.cfg = replace(
            cfg,
            task=replace(cfg.task, progress=False),
            output=replace(cfg.output, embeddings=EmbeddingsFormat.jsonl),  # the driver writes embeddings.npy
        )
        self.run_path = Path(run_path)
        self.failure: Exception | None = None
        """Why the engine could not be built or loaded here; raised by every call, so that the driver gets the
        error itself (a failing constructor would only say that the actor died)."""
        self.info = hardware.detect()
        self.load_model_s = 0.0
        try:
            engine = build_engine(self.cfg, self.info)
            with timing.timed() as load:
                engine.load_model()
        except Exception as exc:
            self.failure = exc
            return
        self.load_model_s = load.seconds
        self.engine = engine  # loaded here: each batch's task run (RecordsTask) uses it and leaves it loaded
        self.scratch = Path(tempfile.mkdtemp(prefix="omnirun-worker-"))

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def describe(self) -> WorkerInfo:
        self.check()
        engine, cfg = self.engine, self.cfg
        assert engine.plan is not None
        batch_size = engine.plan.batch_size if cfg.task.batch_size == "auto" else int(cfg.task.batch_size)
        runner = plugins.task(cfg.task.name).run
        windowed = not isinstance(runner, RecordsTask) or runner.windowed
        params = engine.parameters()
        return WorkerInfo(
            node=f"{socket.gethostname()} ({node_ip()})",
            node_id=node_id(),
            pid=os.getpid(),
            batch_size=batch_size,
            window=batch_size * WINDOW_BATCHES if windowed else 1,
            load_model_s=self.load_model_s,
            plan=to_jsonable(engine.plan),
            hardware=to_jsonable(self.info),
            model={"name": cfg.model.name, "resolved": to_jsonable(engine.source), "model_type": engine.model_type},
            num_parameters=params.total if params else None,
            trainable_parameters=params.trainable if params else None,
            model_footprint_mb=engine.memory().model_footprint_mb,
        )

    def run_batch(self, number: int, records: list[Record], batch_size: int, window: int) -> BatchResult:
        """The rows of `records` (input positions kept: seeds and image names follow them), in input order."""
        self.check()
        started = time.perf_counter()
        cfg = replace(self.cfg, task=replace(self.cfg.task, batch_size=batch_size))
        run = RunDir(self.scratch / f"batch-{number}")
        shutil.rmtree(run.path, ignore_errors=True)  # a retried batch starts clean
        run.path.mkdir(parents=True)
        try:
            data = Inputs(Records.of(records), SOURCE, None)
            job = BatchJob(cfg, run, self.engine, data, self.info, "", started, window=window, summarize_scores=False)
            metrics: RunMetrics = TASKS[cfg.task.name](job)
            lines = run.outputs.read_bytes().splitlines(keepends=True) if run.outputs.exists() else []
            files = self.move_files(run)
        finally:
            shutil.rmtree(run.path, ignore_errors=True)
        return BatchResult(
            number,
            lines,
            metrics.model_s or 0.0,
            metrics.generation_s or 0.0,
            metrics.memory.max_rss_mb,
            metrics.memory.max_cuda_allocated_mb,
            metrics.memory.max_cuda_reserved_mb,
            f"{socket.gethostname()}:{os.getpid()}",
            files,
        )

    def move_files(self, run: RunDir) -> list[str]:
        """Files the rows name (task=image, segment) moved into the run directory (shared with the driver); their
        names hold the record's input position, so a retried batch overwrites its own files only."""
        moved = []
        for folder in FILE_FOLDERS:
            source = run.path / folder
            if not source.is_dir():
                continue
            target = self.run_path / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(source.iterdir()):
                shutil.move(str(path), target / path.name)
                moved.append(f"{folder}/{path.name}")
        return moved


def node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not in a Ray worker
        return ""


def node_ip() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # not in a Ray worker (tests call the worker directly)
        return "local"
