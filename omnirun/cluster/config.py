"""The `cluster` config group: where the records of a run are processed."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from omnirun.errors import ConfigError

RAY_EXTRA = 'cluster=ray needs Ray Data: pip install "omnirun[ray]" (or make setup RAY=1)'


class ClusterKind(StrEnum):
    local = "local"
    ray = "ray"


@dataclass
class ClusterConfig:
    name: ClusterKind = ClusterKind.local
    """`local`: this machine (one process, or the ranks of `accelerate launch` / `torchrun`); `ray`: a pool of Ray
    actors, each holding one engine, on a local Ray started for the run or on an existing cluster."""
    address: str | None = None
    """The Ray cluster: unset starts a local Ray for this run (stopped at its end); `auto` joins the cluster this
    machine belongs to (`ray start`); `ray://<head>:10001` connects through Ray Client."""
    workers: int = 2
    """Ray actors, each holding one engine (one copy of the model)."""
    cpus_per_worker: float = 1.0
    """Logical CPUs each worker reserves (also its torch threads, rounded down, at least 1)."""
    gpus_per_worker: float = 0.0
    """GPUs each worker reserves; a fraction (0.5) puts several workers on one GPU."""
    batch_size: Any = "auto"
    """Records sent to a worker at a time: `auto` is one batching window of the task (`task.batch_size` x 8),
    and a number is rounded up to whole windows, so that batches, seeds and outputs are those of one process."""
    max_task_retries: int = 3
    """How often a batch whose worker died (killed, out of memory, its node lost) is retried on the restarted
    worker before the run fails (the rows written are kept: resume=<run dir>)."""
    max_restarts: int = -1
    """How often a dead worker is restarted (on any node with room for it); -1: without limit."""
    start_timeout_s: float = 600.0
    """How long to wait for the workers to start (the cluster may have to scale up) before failing."""

    def validate(self) -> None:
        def bad(key: str, rule: str, value: Any) -> ConfigError:
            return ConfigError(f"cluster.{key} {rule}, got {value!r}")

        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise bad("workers", "must be a positive integer", self.workers)
        if not math.isfinite(self.cpus_per_worker) or self.cpus_per_worker <= 0:
            raise bad("cpus_per_worker", "must be a positive number of CPUs (fractions allowed)", self.cpus_per_worker)
        if not math.isfinite(self.gpus_per_worker) or self.gpus_per_worker < 0:
            raise bad("gpus_per_worker", "must be 0 or a number of GPUs (fractions allowed)", self.gpus_per_worker)
        if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
            raise bad("gpus_per_worker", "above 1 must be a whole number of GPUs", self.gpus_per_worker)
        bs = self.batch_size
        if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise bad("batch_size", "must be a positive integer or 'auto'", bs)
        if self.max_task_retries < 0:
            raise bad("max_task_retries", "must be >= 0", self.max_task_retries)
        if self.max_restarts < -1:
            raise bad("max_restarts", "must be >= 0, or -1 for no limit", self.max_restarts)
        if self.start_timeout_s <= 0:
            raise bad("start_timeout_s", "must be > 0 seconds", self.start_timeout_s)
        if self.address is not None and not self.address.strip():
            raise bad("address", "must be unset (a local Ray), 'auto' or a ray://host:port address", self.address)
        if self.name == ClusterKind.ray and importlib.util.find_spec("ray") is None:
            raise ConfigError(RAY_EXTRA)
