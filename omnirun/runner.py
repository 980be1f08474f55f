"""The orchestrator, as a recipe: check the inputs and the hardware request, open (or resume) the run
directory, build the engine, run the task, write the metrics and the optional copies of the results."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from omnirun import distributed, hardware, inputs, plugins, rundir, tracking
from omnirun.cluster import ClusterKind
from omnirun.config import RunConfig
from omnirun.confstore import load_saved
from omnirun.engine.base import Engine
from omnirun.engine.build import build
from omnirun.errors import ConfigError, InputError, OmnirunError
from omnirun.inputs import media
from omnirun.results import formats
from omnirun.results.schema import RunMetrics, Status, to_jsonable
from omnirun.rundir import RunDir
from omnirun.tasks import TASKS, Job, input_spec
from omnirun.tasks.export import check_target as check_export_target

log = logging.getLogger(__name__)


@dataclass
class Checked:
    """What `check` established before a run directory exists."""

    data: inputs.Inputs
    info: hardware.HardwareInfo
    engine: Engine | None
    """Built, not loaded: the device is resolved and the backend chosen, once. None under `cluster=ray` when this
    machine cannot place the model itself (a CPU head node of a GPU cluster): each worker builds its own."""


def check(cfg: RunConfig) -> Checked:
    """Everything that can fail before a run directory exists: read the input, check the model path, the
    output folder and the hardware request (building the engine places the model: an impossible request is a
    ConfigError here, before any weights load)."""
    formats.check_openai_batch(cfg.output.openai_batch, str(cfg.task.name))
    if cfg.task.name == "export":
        check_export_target(cfg)  # a new or empty folder: nothing foreign is exported or uploaded
    if plugins.task(cfg.task.name).reads_input:
        spec = input_spec(cfg.task.name)
        data = inputs.read(cfg.input, cfg.generation, interactive_when_empty=cfg.task.name == "chat", spec=spec)
    else:  # the task reads its input itself (task=score: a run directory)
        data = inputs.Inputs(inputs.Records.of([]), "task", None)
    if cfg.input.on_error == "fail" and data.problems:
        raise InputError("input.on_error=fail and the input has bad records: " + "; ".join(data.problems[:20]))
    check_output_root(cfg.output.root)
    info = hardware.detect()
    if cfg.cluster.name == ClusterKind.ray:
        from omnirun.cluster import ray_run

        ray_run.check(cfg, data)
        return Checked(data, info, driver_engine(cfg, info))
    return Checked(data, info, build_engine(cfg, info))


def driver_engine(cfg: RunConfig, info: hardware.HardwareInfo) -> Engine | None:
    """Under cluster=ray: the engine built here, so that a model or task the workers would refuse fails before
    the cluster starts; None when only the cluster's nodes can place it (`cluster.address` set and this machine
    lacks what the request needs, such as a GPU)."""
    try:
        return build_engine(cfg, info)
    except ConfigError as exc:
        if cfg.cluster.address is None:
            raise
        log.info("this machine cannot place the model (%s); the cluster's workers will", exc)
        return None


def check_output_root(root: str) -> None:
    """output.root must be a folder omnirun can create and write in (exit 2 before the model loads)."""
    path = Path(root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"output.root={root!r} cannot be written: {exc.strerror or exc}; choose another folder"
        ) from None


def run(
    cfg: RunConfig,
    run: RunDir,
    checked: Checked,
    resolved_yaml: str,
    overrides: list[str],
    resuming: bool = False,
    rank: distributed.Rank | None = None,
) -> RunMetrics:
    """Run one job into `run`; with `resuming`, continue the interrupted run there. On Ctrl-C, what finished
    is kept and metrics.json says `interrupted`; the KeyboardInterrupt propagates. Under a data-parallel
    launch (`rank`), each rank runs its shard; rank 0 merges and writes the metrics."""
    started = time.perf_counter()
    data, engine = checked.data, checked.engine
    config_sha = rundir.config_hash(cfg)
    main = rank is None or rank.is_main
    skipped, window = 0, 0
    if resuming:
        skipped, window = prepare_resume(cfg, run, data, config_sha)
    elif main:
        run.write_start(resolved_yaml, overrides)
    if cfg.cluster.name == ClusterKind.ray:
        from omnirun.cluster import ray_run

        result = ray_run.run(cfg, run, data, config_sha, started, skipped, window)
    else:
        assert engine is not None  # built by `check` unless the run goes to a Ray cluster
        job = Job(cfg, run, engine, data, checked.info, config_sha, started, skipped, rank, window)
        result = TASKS[cfg.task.name](job)
    if not main:
        return result
    run.write_metrics(result)
    if result.status == Status.interrupted:
        raise KeyboardInterrupt
    write_formats(cfg, run, data, resolved_yaml, result)
    tracking.log_run(cfg.tracking, cfg.output.root, run.path, to_jsonable(cfg))
    return result


def build_engine(cfg: RunConfig, info: hardware.HardwareInfo) -> Engine:
    """The engine for this job, checked against its task (a model without a head for the task is refused here,
    before anything loads); a batched run (`task.batch_size` not 1) tells the backend choice so."""
    batched = str(cfg.task.batch_size) != "1"
    media.set_budgets(cfg.input)  # what one image or audio record may take (input.max_*), in this process
    return build(
        cfg.model,
        cfg.hardware,
        generation=cfg.generation,
        info=info,
        batched=batched,
        task=cfg.task.name,
        task_config=cfg.task,
    )


def prepare_resume(cfg: RunConfig, run: RunDir, data: inputs.Inputs, config_sha: str) -> tuple[int, int]:
    """Check the interrupted run is this job, keep its finished records; returns how many are done and the
    batching window the earlier attempt used (the resumed run keeps it, so its batches are the same)."""
    check_resumable(cfg, run, data, config_sha)
    window = rundir.window_of(run)
    done = rundir.finished_prefix(run, (r.id for r in data.records), window)
    run.archive_metrics()
    run.error.unlink(missing_ok=True)  # a stale error.txt of the earlier attempt would mislead
    log.info("resuming %s: %d records done, %d to go", run, done, len(data.records) - done)
    run.append_command()
    return done, window


def check_resumable(cfg: RunConfig, run: RunDir, data: inputs.Inputs, config_sha: str) -> None:
    """`run` is an omnirun run of this job (same config, same input), unless `resume_force`; ConfigError if not."""
    if not run.manifest.exists() and not cfg.resume_force:
        if not run.started_by_omnirun():
            raise ConfigError(
                f"cannot resume {run}: it is not an omnirun run directory (no {rundir.MANIFEST}, "
                f"{rundir.OVERRIDES} or {rundir.COMMAND}); start a new run, or set resume_force=true"
            )
        saved = rundir.config_hash(load_saved(run.config))
        if saved != config_sha:
            raise ConfigError(
                f"cannot resume {run}: its config.yaml is not this job's config (or not an omnirun run); "
                "rerun with the same config, or set resume_force=true"
            )
    rundir.check_same_job(run, config_sha, data.fingerprint, cfg.resume_force)


def write_formats(cfg: RunConfig, run: RunDir, data: inputs.Inputs, resolved_yaml: str, result: RunMetrics) -> None:
    """The optional copies of the results in standard formats."""
    openai = cfg.output.openai_batch if cfg.output.openai_batch is not None else data.openai
    if openai:
        formats.write_openai_batch(run.path, cfg.model.name, str(cfg.task.name))
    if cfg.output.dataset:
        try:
            formats.write_dataset(run.path, resolved_yaml, result.to_json(), cfg.output.push_to_hub)
        except Exception as exc:
            raise OmnirunError(f"output.dataset: writing or pushing the dataset failed: {exc}") from exc


def print_summary(result: RunMetrics, run: RunDir, out: TextIO) -> None:
    """The short table the CLI prints at the end."""

    def fmt(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:,.2f}{unit}"

    rows = [
        ("samples", f"{result.num_samples} ({result.num_errors} errors)"),
        ("load model", fmt(result.load_model_s, " s")),
        ("generation", fmt(result.generation_s, " s")),
        ("output tokens", str(result.output_tokens)),
        ("output tok/s", fmt(result.output_tokens_per_s)),
        ("ttft p50", fmt(result.ttft_ms.p50 if result.ttft_ms else None, " ms")),
        ("tpot p50", fmt(result.tpot_ms.p50 if result.tpot_ms else None, " ms")),
        ("e2e p50", fmt(result.e2e_ms.p50 if result.e2e_ms else None, " ms")),
        ("peak RSS", fmt(result.memory.max_rss_mb, " MB")),
    ]
    width = max(len(k) for k, _ in rows)
    print("", file=out)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}", file=out)
    print(f"run directory: {run}", file=out)
