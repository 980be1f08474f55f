"""`cluster=ray`: the records of a run processed by a pool of Ray actors, written by this process (the driver)
into the same run directory a single process writes.

The driver reads the records lazily and sends them in batches of whole batching windows (so each worker forms
the batches, with the seeds, a single process would) to `cluster.workers` actors, each holding one engine
(`cluster.worker.Worker`). At most a few batches per worker are in flight or waiting to be written, so memory
does not grow with the input. Finished batches are written in input order, each in one append followed by
fsync, so outputs.jsonl is always a prefix of the input: a driver killed at any point leaves a run that
`resume=<run dir>` completes, recomputing only the records not yet written.

Exactly once: a row reaches outputs.jsonl only from the driver, in input order, once per batch number. A worker
that dies (killed, out of memory, its node lost) is restarted by Ray (`cluster.max_restarts`) on any node with
room for it, and the batches it held are retried there (`cluster.max_task_retries`); a retried batch's rows
replace nothing, because nothing of it was written. A record that fails is its own error row, as in one
process: the task's own code runs the batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from omnirun import hardware, inputs
from omnirun.cluster.config import RAY_EXTRA, ClusterConfig
from omnirun.cluster.worker import BatchResult, Worker, WorkerInfo
from omnirun.config import EmbeddingsFormat, RunConfig
from omnirun.errors import ConfigError, OmnirunError, first_line
from omnirun.inputs import Record
from omnirun.results.schema import MemoryMetrics, RunMetrics, Status, summarize
from omnirun.results.writer import ResultWriter, RunTotals
from omnirun.rundir import RunDir
from omnirun.secrets import is_secret_variable
from omnirun.tasks.finish import score_summary, scoring_of

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2
"""Batches sent to one worker at a time: the next is waiting when one finishes, so no worker idles."""
HELD_PER_WORKER = 4
"""Batches in flight or finished but not yet written (an earlier one is still running), per worker: the bound
on what the driver holds."""
LOCAL_EXTRA_CPUS = 2
"""Logical CPUs a local Ray declares beyond the workers' own, for Ray's own processes and actors."""
FORWARDED_ENV = ("HF_", "TRANSFORMERS_", "OMNIRUN_", "TOKENIZERS_", "OMP_NUM_THREADS")
"""Environment variables a remote cluster's workers get from the driver (secrets never: set them on the nodes)."""
WAIT_S = 1.0
"""How long the driver waits for a batch before it looks again at the workers it avoids."""
AVOID_S = 5.0
"""A worker just lost gets no batch for this long, times its losses in a row (Ray restarts it meanwhile)."""
RAY_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


@dataclass
class Pool:
    """The started workers and what they told the driver."""

    actors: list[Any]
    infos: list[WorkerInfo]
    session: dict[str, Any]


@dataclass(frozen=True)
class BatchSettings:
    batch_size: int
    """The model call's batch size (the first worker's, so every worker batches alike)."""
    window: int
    retries: int
    """`cluster.max_task_retries`: how often the driver sends a batch again after losing its worker."""


@dataclass
class Tally:
    """What the loop accumulated, for the metrics."""

    totals: RunTotals = field(default_factory=RunTotals)
    model_s: float = 0.0
    max_rss_mb: float = 0.0
    max_cuda_allocated_mb: float | None = None
    max_cuda_reserved_mb: float | None = None
    batches: int = 0
    workers_seen: set[str] = field(default_factory=set)

    def add(self, result: BatchResult) -> None:
        self.model_s += result.model_s
        self.max_rss_mb = max(self.max_rss_mb, result.max_rss_mb or 0.0)
        self.max_cuda_allocated_mb = peak(self.max_cuda_allocated_mb, result.max_cuda_allocated_mb)
        self.max_cuda_reserved_mb = peak(self.max_cuda_reserved_mb, result.max_cuda_reserved_mb)
        self.batches += 1
        self.workers_seen.add(result.worker)


def peak(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def import_ray() -> Any:
    """The `ray` module, quiet and offline; ConfigError naming the extra when it is not installed."""
    for key, value in RAY_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_EXTRA) from None
    return ray


def run(
    cfg: RunConfig,
    run_dir: RunDir,
    data: inputs.Inputs,
    config_sha: str,
    started: float,
    skipped: int = 0,
    window: int = 0,
) -> RunMetrics:
    """Process the records from position `skipped` on the cluster into `run_dir`; the run's metrics. `window` is
    an earlier attempt's batching window (a resumed run keeps it); 0 for a new run. On Ctrl-C the batches
    finished in input order are kept and the metrics say `interrupted`."""
    ray = import_ray()
    with connect(ray, cfg.cluster):
        pool = start_workers(ray, cfg, run_dir)
        first = pool.infos[0]
        window = window if window > 1 and first.window > 1 else first.window
        per_batch = batch_records(cfg.cluster.batch_size, first.batch_size, window)
        write_manifest(cfg, run_dir, data, config_sha, pool, window, per_batch)
        tally = Tally()
        status = Status.completed
        total = len(data.records) - skipped
        from omnirun.tasks.records import ProgressBar

        gen_start = time.perf_counter()
        with ProgressBar(total, cfg.task.progress) as bar, ResultWriter(run_dir.outputs) as out:
            batches = numbered(data.records.from_position(skipped), per_batch)
            try:
                settings = BatchSettings(first.batch_size, window, cfg.cluster.max_task_retries)
                stream(ray, pool.actors, batches, settings, out, tally, bar)
            except KeyboardInterrupt:
                status = Status.interrupted
        generation_s = time.perf_counter() - gen_start
    if cfg.output.embeddings == EmbeddingsFormat.npy:
        from omnirun.tasks.analysis import write_embeddings_npy

        write_embeddings_npy(run_dir.path, run_dir.outputs)
    memory = MemoryMetrics(
        tally.max_rss_mb or None,
        tally.max_cuda_allocated_mb,
        tally.max_cuda_reserved_mb,
        first.model_footprint_mb,
    )
    result = summarize(
        tally.totals,
        status=status,
        load_model_s=max(info.load_model_s for info in pool.infos),
        total_s=time.perf_counter() - started,
        generation_s=generation_s,
        memory=memory,
        resumed_records=skipped,
        model_s=tally.model_s,
    )
    result.num_parameters, result.trainable_parameters = first.num_parameters, first.trainable_parameters
    scoring = scoring_of(cfg.task, cfg.seed)
    if scoring is not None:
        result.scores = score_summary(run_dir.outputs, scoring)
    return result


def batch_records(batch_size: Any, task_batch_size: int, window: int) -> int:
    """Records per batch sent to a worker: `auto` is `task.batch_size` x 8 (one window of a windowed task); a
    number is rounded up to whole windows, so that batches start where a single process's windows start."""
    from omnirun.tasks import WINDOW_BATCHES

    wanted = task_batch_size * WINDOW_BATCHES if batch_size == "auto" else int(batch_size)
    return max(1, math.ceil(wanted / window)) * window


def numbered(records: Iterable[Record], size: int) -> Iterator[tuple[int, list[Record]]]:
    """(batch number, records) of `size` records each, read as they are needed."""
    from omnirun.tasks.batching import windows

    return enumerate(windows(records, size))


@contextlib.contextmanager
def connect(ray: Any, cluster: ClusterConfig) -> Iterator[None]:
    """Join the configured cluster, or start a local Ray for this run (stopped at the end, workers and all)."""
    import logging as std_logging

    options: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": std_logging.ERROR,  # a lost worker is reported by the run itself
        "include_dashboard": False,
        "ignore_reinit_error": False,
    }
    if cluster.address is None:
        needed = cluster.workers * cluster.cpus_per_worker
        options["num_cpus"] = math.ceil(needed) + LOCAL_EXTRA_CPUS
        check_local_gpus(cluster)
    else:
        options["address"] = cluster.address
        options["runtime_env"] = {"env_vars": forwarded_env()}
        del options["include_dashboard"]
    try:
        ray.init(**options)
    except Exception as exc:
        where = "a local Ray" if cluster.address is None else f"cluster.address={cluster.address!r}"
        raise OmnirunError(
            f"cannot start or join Ray ({where}): {first_line(str(exc))}; check that `ray status` works there"
        ) from exc
    try:
        yield
    finally:
        ray.shutdown()


def check_local_gpus(cluster: ClusterConfig) -> None:
    """A local Ray has this machine's GPUs only: workers that need more fail now, not after a wait."""
    if cluster.gpus_per_worker <= 0:
        return
    gpus = len(hardware.detect().gpus)
    if gpus < cluster.gpus_per_worker:
        raise ConfigError(
            f"cluster.gpus_per_worker={cluster.gpus_per_worker:g} but this machine has {gpus} GPU(s) and no "
            "cluster.address is set; set cluster.gpus_per_worker=0, or join a cluster with GPUs (cluster.address=auto)"
        )


def forwarded_env() -> dict[str, str]:
    """The driver's offline switches, caches and thread counts, for the workers of a remote cluster."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) and not is_secret_variable(k)}


def start_workers(ray: Any, cfg: RunConfig, run_dir: RunDir) -> Pool:
    """`cluster.workers` actors, spread over the nodes, each with a loaded engine; waits until all have started
    (up to `cluster.start_timeout_s`). A worker that cannot build or load the model fails the run with its error."""
    cluster = cfg.cluster
    actor = ray.remote(Worker).options(
        num_cpus=cluster.cpus_per_worker,
        num_gpus=cluster.gpus_per_worker,
        max_restarts=cluster.max_restarts,
        max_task_retries=cluster.max_task_retries,
        scheduling_strategy="SPREAD",
    )
    actors = [actor.remote(cfg, str(run_dir.path)) for _ in range(cluster.workers)]
    refs = [a.describe.remote() for a in actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=cluster.start_timeout_s)
    if len(ready) < len(refs):
        resources = ray.cluster_resources()
        raise OmnirunError(
            f"cluster: {len(refs) - len(ready)} of {cluster.workers} workers did not start within "
            f"cluster.start_timeout_s={cluster.start_timeout_s:g} (each needs {cluster.cpus_per_worker:g} CPU, "
            f"{cluster.gpus_per_worker:g} GPU; the cluster has {resources.get('CPU', 0):g} CPU, "
            f"{resources.get('GPU', 0):g} GPU); lower cluster.workers or add nodes"
        )
    try:
        infos: list[WorkerInfo] = ray.get(refs)
    except Exception as exc:
        raise worker_error(exc, "a worker could not start") from exc
    session = {
        "ray_version": ray.__version__,
        "address": cluster.address or "local",
        "nodes": [
            {
                "node": n.get("NodeManagerAddress"),
                "node_id": n.get("NodeID"),
                "alive": n.get("Alive"),
                "resources": n.get("Resources"),
            }
            for n in ray.nodes()
        ],
        "resources": ray.cluster_resources(),
    }
    return Pool(actors, infos, session)


def worker_error(exc: BaseException, what: str) -> OmnirunError:
    """A worker's failure as one line: its own OmnirunError (a ConfigError keeps its exit status 2), or what Ray
    said, with the way on."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, OmnirunError):
        return cause
    text = first_line(str(cause if cause is not None else exc))
    return OmnirunError(f"cluster: {what}: {text}")


def stream(
    ray: Any,
    actors: list[Any],
    batches: Iterator[tuple[int, list[Record]]],
    settings: BatchSettings,
    out: ResultWriter,
    tally: Tally,
    bar: Any,
) -> None:
    """Send the batches to the workers (a few each), write the finished ones in input order; returns when all
    are written. A batch whose worker was lost (its process or node died, or cannot be reached) is sent again,
    to another worker when one is up, at most `cluster.max_task_retries` times on top of Ray's own retries; then
    the run fails with OmnirunError (what is written stays written). A batch whose task raised fails the run.
    The tally's totals are the writer's (accumulated from the rows as they are written)."""
    tally.totals = out.totals
    lost = lost_worker_errors(ray)
    load = dict.fromkeys(range(len(actors)), 0)  # batches in flight per worker
    avoid_until = dict.fromkeys(range(len(actors)), 0.0)  # a worker that was just lost gets nothing until then
    strikes = dict.fromkeys(range(len(actors)), 0)
    pending: dict[Any, tuple[int, int, list[Record], int]] = {}  # ref -> (number, worker, records, attempts)
    again: deque[tuple[int, list[Record], int]] = deque()  # batches to send again: (number, records, attempts)
    finished: dict[int, BatchResult] = {}
    next_number, exhausted = 0, False
    limit = HELD_PER_WORKER * len(actors)

    def pick() -> int | None:
        now = time.monotonic()
        free = [w for w in load if load[w] < IN_FLIGHT_PER_WORKER and avoid_until[w] <= now]
        return min(free, key=lambda w: load[w]) if free else None

    while True:
        while (worker := pick()) is not None:
            if again:
                number, records, attempts = again.popleft()
            elif not exhausted and len(pending) + len(finished) + len(again) < limit:
                item = next(batches, None)
                if item is None:
                    exhausted = True
                    break
                (number, records), attempts = item, 0
            else:
                break
            ref = actors[worker].run_batch.remote(number, records, settings.batch_size, settings.window)
            pending[ref] = (number, worker, records, attempts)
            load[worker] += 1
        if not pending and not again:
            return
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S) if pending else ([], [])
        if not ready and not pending:
            time.sleep(WAIT_S)  # every worker is avoided for now: wait for one
        for ref in ready:
            number, worker, records, attempts = pending.pop(ref)
            load[worker] -= 1
            try:
                result: BatchResult = ray.get(ref)
            except lost as exc:
                if attempts >= settings.retries:
                    raise batch_error(exc, records[0].index) from exc
                strikes[worker] += 1
                avoid_until[worker] = time.monotonic() + AVOID_S * strikes[worker]
                log.warning("worker %d lost (%s); batch %d is sent again", worker, type(exc).__name__, number)
                again.append((number, records, attempts + 1))
                continue
            except Exception as exc:
                raise worker_error(exc, f"the batch from input position {records[0].index} failed") from exc
            strikes[worker] = 0
            finished[number] = result
            tally.add(result)
        while next_number in finished:
            tokens = out.totals.output_tokens
            lines = finished.pop(next_number).lines
            out.write_encoded(lines)
            bar.update(len(lines), out.totals.output_tokens - tokens)
            next_number += 1


def lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a batch whose worker was lost (not an error of the batch itself)."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError)


def batch_error(exc: BaseException, position: int) -> OmnirunError:
    return OmnirunError(
        f"cluster: the batch from input position {position} lost its worker more often than "
        f"cluster.max_task_retries allows ({first_line(str(exc))}); the rows before it are written: "
        "raise cluster.max_task_retries, or find the record that kills the worker, then resume=<run dir>"
    )


def write_manifest(
    cfg: RunConfig,
    run_dir: RunDir,
    data: inputs.Inputs,
    config_sha: str,
    pool: Pool,
    window: int,
    per_batch: int,
) -> None:
    """manifest.json as a single process writes it (the plan and hardware are the first worker's), plus the
    cluster: nodes, workers and their resources, the retry settings."""
    first = pool.infos[0]
    cluster = cfg.cluster
    run_dir.write_manifest(
        {
            "hardware": first.hardware,
            "plan": first.plan,
            "model": {
                **first.model,
                "num_parameters": first.num_parameters,
                "trainable_parameters": first.trainable_parameters,
            },
            "seed": cfg.seed,
            "input": {"source": data.source, "fingerprint": data.fingerprint, "num_records": len(data.records)},
            "config_sha256": config_sha,
            "window": window,
            "cluster": {
                "name": str(cluster.name),
                **pool.session,
                "workers": [
                    {"node": info.node, "node_id": info.node_id, "pid": info.pid, "load_model_s": info.load_model_s}
                    for info in pool.infos
                ],
                "worker_resources": {"CPU": cluster.cpus_per_worker, "GPU": cluster.gpus_per_worker},
                "batch_records": per_batch,
                "max_task_retries": cluster.max_task_retries,
                "max_restarts": cluster.max_restarts,
            },
        }
    )


def check(cfg: RunConfig, data: inputs.Inputs) -> None:
    """What cluster=ray refuses before a run directory exists: a task that is not per-record (benchmark, export,
    score run on one machine), an interactive chat."""
    from omnirun import plugins
    from omnirun.tasks.records import RecordsTask

    if not isinstance(plugins.task(cfg.task.name).run, RecordsTask):
        raise ConfigError(
            f"cluster=ray runs per-record tasks and task={cfg.task.name} is not one; use cluster=local for it"
        )
    if data.source == "interactive":
        raise ConfigError(
            "cluster=ray needs records (input.path, input.dataset or input.prompt), not an interactive chat"
        )
    import_ray()
