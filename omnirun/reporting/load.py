"""Finding runs, reading run directories into typed objects, and the runs table (one DataFrame row per run).

A run is any directory holding metrics.json, benchmark.json or outputs.jsonl; a sweep's job that died before
writing any of them is still found (through the sweep's multirun.yaml) and listed as `missing`. Files are read
through their owners: `RunDir` (names, overrides.yaml), `RunMetrics`, `BenchmarkReport`, `read_rows`.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml

from omnirun import rundir
from omnirun.reporting.values import hashable, is_numeric, natural, short
from omnirun.results.benchmark import BenchmarkReport, Phase
from omnirun.results.schema import ResultRow, RunMetrics
from omnirun.results.writer import read_rows
from omnirun.rundir import RunDir

CONF_FILE = Path(__file__).resolve().parent.parent.parent / "conf" / "config.yaml"
"""What Hydra saves at a sweep's root (its config and overrides)."""
RUN_MARKERS = (rundir.METRICS, rundir.BENCHMARK_JSON, rundir.OUTPUTS)
"""A directory holding any of these is a run."""
IGNORED_KEYS = {"output.root", "task.progress", "resume", "resume_force", "debug", "rerun"}
"""Overrides that say where or how a run was recorded, never what was measured (hydra.* is ignored too)."""
X_PRIORITY = ("batch_size", "prompt_tokens", "new_tokens", "max_new_tokens", "num_threads")
"""Among the swept keys, these go on the x axis first (the others become one line or bar per value)."""


@dataclass(frozen=True)
class Metric:
    column: str
    title: str
    unit: str
    short: str
    """Column header in the markdown tables."""
    higher_is_better: bool


METRICS = (
    Metric("output_tokens_per_s", "Output throughput", "tokens/s", "output tok/s", True),
    Metric("decode_tokens_per_s", "Decode throughput", "tokens/s", "decode tok/s", True),
    Metric("prefill_tokens_per_s", "Prefill throughput", "tokens/s", "prefill tok/s", True),
    Metric("samples_per_s", "Samples per second", "samples/s", "samples/s", True),
    Metric("ttft_ms_p50", "Time to first token, p50", "ms", "TTFT p50 ms", False),
    Metric("tpot_ms_p50", "Time per output token, p50", "ms", "TPOT p50 ms", False),
    Metric("e2e_ms_p50", "End-to-end latency, p50", "ms", "E2E p50 ms", False),
    Metric("max_rss_mb", "Peak memory (RSS)", "MB", "peak RSS MB", False),
    Metric("load_model_s", "Model load time", "s", "load s", False),
)
BY_COLUMN = {m.column: m for m in METRICS}
BENCHMARK_COLUMNS = ("decode_tokens_per_s", "prefill_tokens_per_s", "samples_per_s")


class ReportError(ValueError):
    """A path that holds nothing to report; the message is one line for the user (the CLIs exit 2)."""


@dataclass
class Run:
    """One run directory as recorded: typed metrics and benchmark report, parsed overrides, flattened config."""

    path: Path
    label: str
    """The run's path below the runs' common parent (`3` for a sweep's job 3)."""
    metrics: RunMetrics | None
    overrides: dict[str, Any]
    """The command-line overrides, values parsed (`{"generation.temperature": 0.2}`), bookkeeping keys dropped."""
    config: dict[str, Any]
    """The resolved config.yaml with dotted keys."""
    benchmark: BenchmarkReport | None = None
    plan: dict[str, Any] | None = None
    """The hardware plan from manifest.json (device, dtype, quantization, ... with reasons)."""
    error: str | None = None
    """Why the run did not complete: metrics.json's error, else the last line of error.txt."""

    def param(self, key: str) -> Any:
        """The value of a config key for this run: its override, else its resolved config, else the
        config group's default (`model`, `hardware`, ...)."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.config:
            return self.config[key]
        return group_defaults().get(key)

    @property
    def status(self) -> str:
        return "missing" if self.metrics is None else str(self.metrics.status)

    @property
    def outputs(self) -> Path:
        return RunDir(self.path).outputs

    def rows(self) -> list[ResultRow]:
        """The run's outputs.jsonl rows ([] when it has none)."""
        return read_rows(self.outputs)


# ------------------------------------------------------------------------------------------------ finding
def find_runs(path: str | Path) -> list[Run]:
    """Every run under `path` (a run, a sweep, or any folder tree of runs), in natural path order, labelled
    by their path below the runs' common parent."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ReportError(f"{path}: no such directory")
    dirs = run_dirs(root)
    if not dirs:
        raise ReportError(f"{path} holds no runs (no {', '.join(RUN_MARKERS)} below it); give a run or sweep directory")
    base = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else next(iter(dirs)).parent
    rebuilt: dict[Path, list[dict[str, Any]]] = {}
    runs = []
    for d in sorted(dirs, key=lambda d: natural(d.relative_to(base).parts)):
        runs.append(read_run(d, base, stand_in_overrides(d, rebuilt)))
    return runs


def run_dirs(root: Path) -> set[Path]:
    """The run directories under `root`, with the jobs of any sweep there (also those that wrote nothing)."""
    dirs = {p.parent for name in RUN_MARKERS for p in root.rglob(name)}
    for sweep in {p.parent for p in root.rglob(rundir.MULTIRUN_YAML)}:
        dirs |= {job.path for job in rundir.sweep_jobs(sweep)}
    return dirs


def stand_in_overrides(job: Path, cache: dict[Path, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """For a sweep job that died before writing its overrides.yaml: its overrides rebuilt from the sweep."""
    if (job / rundir.OVERRIDES).exists() or not job.name.isdigit() or not (job.parent / rundir.MULTIRUN_YAML).exists():
        return None
    rebuilt = cache.setdefault(job.parent, sweep_job_overrides(job.parent))
    return rebuilt[int(job.name)] if int(job.name) < len(rebuilt) else None


def read_run(run_dir: Path, base: Path | None = None, overrides: dict[str, Any] | None = None) -> Run:
    """The files of one run directory (missing or unreadable ones are left empty), labelled by its path below
    `base`; `overrides` stands in for a missing overrides.yaml."""
    run = RunDir(run_dir)
    metrics = _safely(lambda: RunMetrics.load(run.metrics))
    recorded = _safely(run.read_overrides) if (run / rundir.OVERRIDES).exists() else None
    manifest = _read_json(run.manifest) or {}
    error = metrics.error if metrics is not None else None
    if error is None and (metrics is None or metrics.status != "completed") and run.error.exists():
        lines = [line.strip() for line in run.error.read_text(errors="replace").splitlines() if line.strip()]
        error = lines[-1] if lines else None
    bench_file = run / rundir.BENCHMARK_JSON
    return Run(
        path=run_dir.resolve(),
        label=run_dir.relative_to(base).as_posix() if base is not None else run_dir.name,
        metrics=metrics,
        overrides=parse_overrides(recorded) if recorded is not None else overrides or {},
        config=flatten(_read_yaml(run.config) or {}),
        benchmark=_safely(lambda: BenchmarkReport.load(bench_file)) if bench_file.is_file() else None,
        plan=manifest.get("plan") if isinstance(manifest.get("plan"), dict) else None,
        error=error,
    )


# ---------------------------------------------------------------------------------------------- overrides
def parse_overrides(lines: Iterable[str]) -> dict[str, Any]:
    """`["generation.temperature=0.2", 'input.prompt="Über"']` (from `RunDir.read_overrides`) →
    `{"generation.temperature": 0.2, "input.prompt": "Über"}`: values parsed as Hydra parses them on the
    command line (quotes removed, numbers and booleans typed), bookkeeping keys (output.root, hydra.*, ...)
    dropped."""
    out: dict[str, Any] = {}
    for line in lines:
        key, value = parse_override(str(line))
        if key is not None and wanted(key):
            out[key] = value
    return out


def parse_override(line: str) -> tuple[str | None, Any]:
    """One `key=value` override → (key, value); (None, None) for a deletion or a line without `=`. A value Hydra
    cannot parse (written by hand) is read as a YAML scalar, else kept as text."""
    from hydra.errors import HydraException

    try:
        (override,) = _parser().parse_overrides([line])
    except (HydraException, ValueError):
        key, sep, text = line.partition("=")
        return (key.lstrip("+"), _scalar(text)) if sep and not key.startswith("~") else (None, None)
    if override.is_delete():
        return None, None
    return override.key_or_group, override.value()


def wanted(key: str) -> bool:
    return not key.startswith("hydra.") and key not in IGNORED_KEYS


def sweep_job_overrides(sweep_dir: Path) -> list[dict[str, Any]]:
    """Each job's overrides rebuilt from the sweep's multirun.yaml, numbered as Hydra's basic sweeper numbers
    them (the cartesian product of the swept values, in order); [] when it cannot tell. For jobs that failed
    before writing their overrides.yaml."""
    hydra_conf = (_read_yaml(sweep_dir / rundir.MULTIRUN_YAML) or {}).get("hydra") or {}
    params = (hydra_conf.get("sweeper") or {}).get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list((hydra_conf.get("overrides") or {}).get("task") or [])
    try:
        choices = []
        for o in _parser().parse_overrides(lines):
            if o.is_delete() or not wanted(o.key_or_group):
                continue
            if not o.is_sweep_override():
                choices.append([(o.key_or_group, o.value())])
            elif o.is_discrete_sweep():
                choices.append([(o.key_or_group, v) for v in o.sweep_iterator()])
            else:
                return []
    except Exception:  # an unreadable or unusual multirun.yaml: those jobs stay without overrides
        return []
    return [dict(combo) for combo in itertools.product(*choices)]


@functools.cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


# ------------------------------------------------------------------------------------------------- config
def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → dotted keys (`{"a": {"b": 1}}` → `{"a.b": 1}`); lists and empty dicts stay leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@functools.cache
def group_defaults() -> dict[str, str]:
    """The config groups' default options from conf/config.yaml (`{"model": "smollm2", ...}`)."""
    defaults = (_read_yaml(CONF_FILE) or {}).get("defaults", [])
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if " " not in k}


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The override keys whose value differs between the runs (those that recorded any), x-axis candidates
    first."""
    known = [r for r in runs if r.overrides or r.config]
    keys = dict.fromkeys(k for r in known for k in r.overrides)
    varying = [k for k in keys if len({hashable(r.param(k)) for r in known}) > 1]
    return sorted(varying, key=lambda k: axis_rank(k, [r.param(k) for r in known]))


def axis_rank(key: str, values: Sequence[Any]) -> tuple[int, int, int]:
    """Sort key of the x-axis candidates: numeric first, then batch sizes and lengths, then the most values."""
    leaf = key.rsplit(".", 1)[-1]
    priority = X_PRIORITY.index(leaf) if leaf in X_PRIORITY else len(X_PRIORITY)
    return (0 if is_numeric(values) else 1, priority, -len({hashable(v) for v in values}))


# ------------------------------------------------------------------------------------------------- frames
def headline(run: Run) -> dict[str, Any]:
    """The headline numbers of one run, one per `METRICS` column (None where the run has none); benchmark
    runs add decode, prefill and samples/s from benchmark.json (else metrics.json's copy) and `unstable`."""
    m = run.metrics
    if m is None:
        return {metric.column: None for metric in METRICS if metric.column not in BENCHMARK_COLUMNS}
    row: dict[str, Any] = {
        "output_tokens_per_s": m.output_tokens_per_s,
        "ttft_ms_p50": m.ttft_ms.p50 if m.ttft_ms else None,
        "tpot_ms_p50": m.tpot_ms.p50 if m.tpot_ms else None,
        "e2e_ms_p50": m.e2e_ms.p50 if m.e2e_ms else None,
        "max_rss_mb": m.memory.max_rss_mb,
        "load_model_s": m.load_model_s,
    }
    if run.benchmark is not None:
        phases = run.benchmark.phases
        decode, prefill, generate = (phases.get(p) for p in (Phase.decode, Phase.prefill, Phase.generate))
        row["decode_tokens_per_s"] = decode.decode_tokens_per_s if decode else None
        row["prefill_tokens_per_s"] = prefill.prefill_tokens_per_s if prefill else None
        row["samples_per_s"] = generate.samples_per_s if generate else None
        row["unstable"] = run.benchmark.stability.unstable
    elif m.benchmark is not None:
        row["decode_tokens_per_s"] = m.benchmark.decode_tokens_per_s
        row["prefill_tokens_per_s"] = m.benchmark.prefill_tokens_per_s
        row["samples_per_s"] = m.benchmark.samples_per_s
        row["unstable"] = m.benchmark.unstable
    return row


def runs_frame(runs: Sequence[Run], swept: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: run, status, swept parameters, headline metrics, context (model, task, device), error."""
    swept = swept_keys(runs) if swept is None else list(swept)
    rows = []
    for run in runs:
        plan = run.plan or {}
        device = "/".join(str(plan[k]) for k in ("device", "dtype", "quantization") if plan.get(k)) or None
        row: dict[str, Any] = {"run": run.label, "status": run.status}
        row.update({k: run.param(k) for k in swept})
        row.update(headline(run))
        row.update(
            num_samples=run.metrics.num_samples if run.metrics else None,
            num_errors=run.metrics.num_errors if run.metrics else None,
            model=short(run.config.get("model.name")),
            task=run.config.get("task.name"),
            device=device,
            overrides=" ".join(f"{k}={'null' if v is None else v}" for k, v in run.overrides.items()),
            error=run.error,
            path=str(run.path),
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in BENCHMARK_COLUMNS:  # benchmark columns only where some run is a benchmark
        if column in frame and frame[column].isna().all():
            frame = frame.drop(columns=column)
    frame.attrs["swept"] = swept
    return frame


def load_runs(path: str | Path) -> pd.DataFrame:
    """The runs under `path` as a DataFrame (`frame.attrs["swept"]` lists the swept keys)."""
    return runs_frame(find_runs(path))


# ------------------------------------------------------------------------------------------------ helpers
T = TypeVar("T")


def _safely(load: Callable[[], T]) -> T | None:
    """`load()`, or None when the file cannot be read or does not fit its type (an older or hand-edited
    file): one bad run never stops a report."""
    try:
        return load()
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict | list) else value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
