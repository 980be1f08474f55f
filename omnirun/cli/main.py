"""`python -m omnirun k=v ...`: the only place that touches Hydra and the raw config tree.

Before Hydra runs, every override (each value of a sweep, too) is composed and validated, so a typo, an
unknown option or a bad value fails with one line and exit status 2 before any model loads. One entry point
serves a single run, a sweep (`-m`, through Hydra's launcher) and `rerun=<run dir>`.

SIGTERM and SIGHUP (a scheduler's stop, a closed terminal) take Ctrl-C's path: the finished records are kept,
metrics.json says `interrupted`, the resume command is printed, and the exit status is 128 + the signal's number.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from omnirun.cli.logs import file_log, report_and_exit, setup_logging
from omnirun.cli.preflight import CONF_DIR, preflight, to_run_config
from omnirun.config import RunConfig
from omnirun.confstore import load_saved, register_configs
from omnirun.errors import ConfigError, first_line
from omnirun.inputs import openai
from omnirun.inputs.guard import InputChanged
from omnirun.runlock import RunLock

log = logging.getLogger("omnirun")


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
"""Signals handled like Ctrl-C."""
received: list[int] = []
"""The stop signals this process got (the first decides the exit status)."""


def on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """Raise KeyboardInterrupt where the program is, once: the run then ends as it does on Ctrl-C."""
    received.append(signum)
    if len(received) == 1:
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while the CLI runs (the earlier handlers come back after)."""
    received.clear()
    try:
        previous = {s: signal.signal(s, on_stop_signal) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupt_status() -> tuple[int, str]:
    """The exit status of an interrupted run (128 + the signal's number: 130 for Ctrl-C) and what stopped it."""
    signum = received[0] if received else signal.SIGINT
    return 128 + signum, "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"


def main(argv: list[str] | None = None) -> None:
    with stop_signals_interrupt():
        dispatch(argv)


def dispatch(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    register_configs()
    reruns = [a for a in argv if a.startswith("rerun=")]
    if reruns:
        try:
            rerun(reruns[0].split("=", 1)[1], [a for a in argv if a not in reruns])
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        return
    argv += batch_file_task(argv)
    overrides = [a for a in argv if not a.startswith("-")]
    raw = None
    if not any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):  # not --help, --cfg, ...
        try:
            raw = preflight(overrides)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    flags = [a for a in argv if a in ("-m", "--multirun")]  # Hydra wants its flags before the overrides
    if raw is not None and not flags and not any(o.lstrip("+~").startswith("hydra") for o in overrides):
        run_single(raw, overrides)  # Hydra's launcher adds nothing to one run; its second composition is ~1 s
        return
    overrides = [a for a in argv if a not in flags]
    if flags:
        try:
            overrides += sweep_resume_overrides(overrides)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *flags, *overrides]
    from omnirun import sweep

    sweep.failed_jobs.clear()
    hydra_entry()
    if flags and sweep.failed_jobs:
        print(f"error: {len(sweep.failed_jobs)} sweep job(s) failed: {', '.join(sweep.failed_jobs)}", file=sys.stderr)
        sys.exit(1)


def batch_file_task(argv: list[str]) -> list[str]:
    """`task=<name>` when no task is given and input.path is an OpenAI batch file whose first request's URL
    names a non-generation endpoint (`/v1/embeddings` -> embed, `/v1/score` and `/v1/rerank` -> rerank)."""
    if any(a.lstrip("+").startswith("task=") for a in argv):
        return []
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("input.path=")]
    task = openai.task_of_file(paths[-1]) if paths else None
    return [f"task={task}"] if task is not None else []


def sweep_resume_overrides(overrides: list[str]) -> list[str]:
    """`-m ... resume=<sweep dir>|latest` reruns into that sweep directory (finished jobs are skipped)."""
    from omnirun import rundir

    values = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith(("+", "~")))
    if "resume" not in values or values["resume"] in ("null", "None", ""):
        return []
    target = rundir.sweep_dir(values["resume"], values.get("output.root", "outputs"))
    return [f"hydra.sweep.dir={target}"]


def _hydra_main() -> Any:
    import hydra

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def entry(raw: Any) -> str:
        return run_job(raw)

    return entry


def hydra_entry() -> None:
    _hydra_main()()


def run_single(raw: Any, overrides: list[str]) -> None:
    """One run, without Hydra's launcher: the same typed config and files as a Hydra single run."""
    from omegaconf import OmegaConf

    execute(to_run_config(raw), OmegaConf.to_yaml(raw, resolve=True), overrides, None)


def run_job(raw: Any) -> str:
    """One Hydra job: the typed config and where it runs, from Hydra's state."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    sweep_job = Path(hc.runtime.output_dir) if hc.mode == RunMode.MULTIRUN else None
    cfg = to_run_config(raw)
    return execute(cfg, OmegaConf.to_yaml(raw, resolve=True), list(hc.overrides.task), sweep_job)


def execute(cfg: RunConfig, resolved: str, overrides: list[str], sweep_job: Path | None) -> str:
    """Build the run directory, run, record the outcome. In a sweep (`sweep_job` set) a failure is recorded
    and the sweep goes on; a single run exits with the error's status."""
    from omnirun import distributed, rundir, runner

    setup_logging(cfg.debug)
    rank = distributed.current()
    if rank is not None and (sweep_job is not None or cfg.resume is not None or str(cfg.task.name) == "benchmark"):
        report_and_exit(ConfigError("a data-parallel launch runs one job: no sweep, resume or task=benchmark"), None)
    if rank is not None and str(cfg.cluster.name) != "local":
        report_and_exit(
            ConfigError(f"cluster={cfg.cluster.name} runs from one process; launch it without torchrun"), None
        )
    run: rundir.RunDir | None = None
    lock: RunLock | None = None
    try:
        if sweep_job is not None:  # the job directory exists first, so that a failure below is recorded in it
            sweep_job.mkdir(parents=True, exist_ok=True)
            lock = rundir.RunDir(sweep_job).lock(f"sweep job {sweep_job.name}")
            run = rundir.RunDir(sweep_job)
            run.write_overrides(overrides)  # so that even a job failing below is identifiable
            if cfg.resume is not None and run.status() == "completed":
                print(f"job {run.name}: already completed, skipped")
                return "completed"
        checked = runner.check(cfg)
        if run is not None:
            resuming = cfg.resume is not None and run.is_run()
        elif cfg.resume is not None:
            found = rundir.find(cfg.resume, cfg.output.root, str(cfg.task.name), cfg.model.name)
            runner.check_resumable(cfg, found, checked.data, rundir.config_hash(cfg))  # before anything is written
            if found.status() == "completed":  # nothing to do; its metrics stay as they are
                print(f"{found} already completed; nothing to resume")
                return "completed"
            lock = found.lock(f"cannot resume={cfg.resume}")  # one writer: a run still going is refused
            run, resuming = found, True
        else:
            main_dir = None
            if rank is None or rank.is_main:
                main_dir = rundir.create(cfg.output.root, str(cfg.task.name), cfg.model.name)
                lock = main_dir.lock("a new run")
            run, resuming = distributed.from_main(main_dir, rank), False
        assert run is not None
        with file_log(run.log(None if rank is None else rank.index)):
            result = runner.run(cfg, run, checked, resolved, overrides, resuming=resuming, rank=rank)
    except KeyboardInterrupt as exc:
        if run is not None:
            run.record_failure(exc, "interrupted")
        code, by = interrupt_status()
        print(f"\ninterrupted{by}; finished records are kept. Continue with: resume={run}", file=sys.stderr)
        sys.exit(code)
    except Exception as exc:
        if isinstance(exc, InputChanged) and run is not None:
            exc = InputChanged(f"{exc}; the rows written are kept: once the input is as it was, resume={run}")
        if run is not None:
            run.record_failure(exc, first_line(str(exc)))
        if sweep_job is not None:
            log.error("job %s failed: %s", run, exc)
            return "failed"
        if cfg.debug:
            raise
        report_and_exit(exc, run)
    finally:
        if lock is not None:
            lock.release()
    if rank is None or rank.is_main:
        runner.print_summary(result, run, sys.stdout)
    return "completed"


def rerun(run_dir: str, overrides: list[str]) -> None:
    """`python -m omnirun rerun=<run dir> [key=value ...]`: the run's saved config.yaml, run again into a new
    run directory (a benchmark repeats with the same settings)."""
    from omegaconf import OmegaConf

    from omnirun import rundir

    saved = rundir.RunDir(Path(run_dir).expanduser()).config
    if not saved.is_file():
        raise ConfigError(f"rerun={run_dir!r} is not a run directory (no config.yaml there); check the path")
    cfg = load_saved(saved, overrides)
    cfg.resume = None
    execute(cfg, OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True), [f"rerun={run_dir}", *overrides], None)
