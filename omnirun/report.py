"""Tables and slide-ready plots of runs and sweeps, and side-by-side comparisons.

    python -m omnirun.report <run, sweep or any folder of runs> [--out DIR]
    python -m omnirun.report <baseline dir> <candidate dir> [--out DIR]

One directory: `report.md` (a table, what was swept, the best configuration), `report.csv` and the plots
`throughput.png` and `latency.png`, by default into that directory. Two directories: `compare.md`,
`compare.csv` and `compare.png` with candidate / baseline ratios, runs matched by their swept overrides, by
default into the candidate's directory. A run is any directory holding `metrics.json`; a sweep's job that
died before writing one is listed as `missing`.

From Python:

    from omnirun.report import build_report, compare_runs, load_runs

    runs = load_runs("outputs/sweeps/2025-01-01_12-00-00-000000")   # DataFrame, one row per run
    report = build_report("outputs/sweeps/...")                    # writes the files; .runs .markdown .files
    comparison = compare_runs(baseline_dir, candidate_dir)         # .table: one row per (config, metric)
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

CONF_FILE = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"
IGNORED_KEYS = {"output.root", "task.progress", "resume", "resume_force", "debug", "rerun"}
"""Overrides that say where or how a run was recorded, never what was measured (hydra.* is ignored too)."""


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
THROUGHPUT = ("output_tokens_per_s", "decode_tokens_per_s", "prefill_tokens_per_s")
LATENCY = ("ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50")
COMPARED = ("output_tokens_per_s", "decode_tokens_per_s", "ttft_ms_p50", "e2e_ms_p50", "tpot_ms_p50")
"""The comparison plot's panels: the first four of these that the runs have."""
PARAM_LABELS = {
    "task.batch_size": "Batch size",
    "benchmark.batch_size": "Batch size",
    "benchmark.prompt_tokens": "Prompt length (tokens)",
    "benchmark.new_tokens": "New tokens per sequence",
    "generation.max_new_tokens": "Max new tokens",
    "generation.temperature": "Temperature",
    "generation.top_p": "Top-p",
    "generation.top_k": "Top-k",
    "generation.num_beams": "Beams",
    "hardware.dtype": "dtype",
    "hardware.quantization": "Quantization",
    "hardware.device": "Device",
    "hardware.num_threads": "Threads",
    "model": "Model",
    "model.name": "Model",
    "generation": "Generation preset",
    "hardware": "Hardware preset",
    "task": "Task",
}
X_PRIORITY = ("batch_size", "prompt_tokens", "new_tokens", "max_new_tokens", "num_threads")
"""Among the swept keys, these go on the x axis first (the others become one line or bar per value)."""
MAX_SERIES = 8
STYLE = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "legend.title_fontsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "savefig.facecolor": "white",
}


class ReportError(ValueError):
    """A path that holds nothing to report; the message is one line for the user (the CLI exits 2)."""


@dataclass
class Run:
    """One run directory as recorded: its metrics, overrides (parsed values), flattened config, benchmark."""

    path: Path
    label: str
    metrics: dict[str, Any]
    overrides: dict[str, Any]
    config: dict[str, Any]
    benchmark: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None

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
        return str(self.metrics.get("status") or "missing")


@dataclass
class Report:
    """What `build_report` found and wrote."""

    runs: pd.DataFrame
    """One row per run: run, status, the swept parameters, headline metrics, context, error."""
    swept: list[str]
    """The override keys whose values differ between the runs."""
    x: str | None
    """The key on the plots' x axis (None: one bar per run)."""
    series: list[str]
    """The keys drawn as one line (or bar) per value."""
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Comparison:
    """What `compare_runs` found and wrote."""

    table: pd.DataFrame
    """One row per matched configuration and metric: match, metric, baseline, candidate, ratio, ..."""
    matched_by: list[str]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ loading
def find_runs(path: str | Path) -> list[Run]:
    """Every run under `path` (a run, a sweep, or any folder tree of runs), in natural path order, labelled
    by their path below the runs' common parent."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ReportError(f"{path}: no such directory")
    dirs = {p.parent for p in root.rglob("metrics.json")}
    for sweep in {p.parent for p in root.rglob("multirun.yaml")}:  # jobs killed before writing metrics.json
        dirs |= {p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()}
    if not dirs:
        raise ReportError(f"{path} holds no runs (no metrics.json below it); give a run or sweep directory")
    base = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else next(iter(dirs)).parent
    ordered = sorted(dirs, key=lambda d: _natural(d.relative_to(base).parts))
    jobs: dict[Path, list[dict[str, Any]]] = {}
    runs = []
    for d in ordered:
        overrides = None
        if not (d / "overrides.yaml").exists() and (d.parent / "multirun.yaml").exists() and d.name.isdigit():
            rebuilt = jobs.setdefault(d.parent, sweep_job_overrides(d.parent))  # a job that failed early
            overrides = rebuilt[int(d.name)] if int(d.name) < len(rebuilt) else None
        runs.append(read_run(d, base, overrides))
    return runs


def read_run(run_dir: Path, base: Path | None = None, overrides: dict[str, Any] | None = None) -> Run:
    """The files of one run directory (missing or unreadable ones are left empty), labelled by its path below
    `base`; `overrides` stands in for a missing overrides.yaml."""
    metrics = _read_json(run_dir / "metrics.json") or {"status": "missing"}
    if metrics.get("status") != "completed" and not metrics.get("error") and (run_dir / "error.txt").exists():
        lines = [line for line in (run_dir / "error.txt").read_text().splitlines() if line.strip()]
        metrics["error"] = lines[-1].strip() if lines else None
    recorded = _read_yaml(run_dir / "overrides.yaml")
    return Run(
        path=run_dir.resolve(),
        label=run_dir.relative_to(base).as_posix() if base is not None else run_dir.name,
        metrics=metrics,
        overrides=parse_overrides(recorded) if isinstance(recorded, list) else overrides or {},
        config=flatten(_read_yaml(run_dir / "config.yaml") or {}),
        benchmark=_read_json(run_dir / "benchmark.json"),
        manifest=_read_json(run_dir / "manifest.json"),
    )


def parse_overrides(lines: Iterable[str]) -> dict[str, Any]:
    """`["generation.temperature=0.2", ...]` (an overrides.yaml) → `{"generation.temperature": 0.2}`, values
    parsed as YAML scalars, bookkeeping keys (output.root, hydra.*, ...) dropped."""
    out: dict[str, Any] = {}
    for item in lines:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+")
        if not sep or key.startswith(("~", "hydra.")) or key in IGNORED_KEYS:
            continue
        out[key] = _scalar(value)
    return out


def sweep_job_overrides(sweep_dir: Path) -> list[dict[str, Any]]:
    """Each job's overrides rebuilt from the sweep's multirun.yaml, numbered as Hydra's basic sweeper numbers
    them (the cartesian product of the swept values, in order); [] when it cannot tell. For jobs that failed
    before writing their overrides.yaml."""
    hydra_conf = (_read_yaml(sweep_dir / "multirun.yaml") or {}).get("hydra") or {}
    params = (hydra_conf.get("sweeper") or {}).get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list((hydra_conf.get("overrides") or {}).get("task") or [])
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        choices = []
        for o in OverridesParser.create().parse_overrides(lines):
            key = o.get_key_element()
            if o.is_delete():
                continue
            if not o.is_sweep_override():
                choices.append([f"{key}={o.get_value_element_as_str()}"])
            elif o.is_discrete_sweep():
                choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            else:
                return []
    except Exception:  # an unreadable or unusual multirun.yaml: those jobs stay without overrides
        return []
    return [parse_overrides(combo) for combo in itertools.product(*choices)]


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
    varying = [k for k in keys if len({_hashable(r.param(k)) for r in known}) > 1]
    return sorted(varying, key=lambda k: _axis_rank(k, [r.param(k) for r in known]))


def headline(run: Run) -> dict[str, Any]:
    """The headline numbers of one run (None where the run has none)."""
    m = run.metrics
    row: dict[str, Any] = {
        "output_tokens_per_s": m.get("output_tokens_per_s"),
        "ttft_ms_p50": (m.get("ttft_ms") or {}).get("p50"),
        "tpot_ms_p50": (m.get("tpot_ms") or {}).get("p50"),
        "e2e_ms_p50": (m.get("e2e_ms") or {}).get("p50"),
        "max_rss_mb": (m.get("memory") or {}).get("max_rss_mb"),
        "load_model_s": m.get("load_model_s"),
    }
    bench = m.get("benchmark") or {}
    phases = (run.benchmark or {}).get("phases") or {}
    if bench or phases:
        row["decode_tokens_per_s"] = (phases.get("decode") or {}).get(
            "decode_tokens_per_s", bench.get("decode_tokens_per_s")
        )
        row["prefill_tokens_per_s"] = (phases.get("prefill") or {}).get(
            "prefill_tokens_per_s", bench.get("prefill_tokens_per_s")
        )
        row["samples_per_s"] = (phases.get("generate") or {}).get("samples_per_s", bench.get("samples_per_s"))
        row["unstable"] = ((run.benchmark or {}).get("stability") or {}).get("unstable", bench.get("unstable"))
    return row


def runs_frame(runs: Sequence[Run], swept: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: run, status, swept parameters, headline metrics, context (model, task, device), error."""
    swept = swept_keys(runs) if swept is None else list(swept)
    rows = []
    for run in runs:
        plan = (run.manifest or {}).get("plan") or {}
        device = "/".join(str(plan[k]) for k in ("device", "dtype", "quantization") if plan.get(k)) or None
        row: dict[str, Any] = {"run": run.label, "status": run.status}
        row.update({k: run.param(k) for k in swept})
        row.update(headline(run))
        row.update(
            num_samples=run.metrics.get("num_samples"),
            num_errors=run.metrics.get("num_errors"),
            model=_short(run.config.get("model.name")),
            task=run.config.get("task.name"),
            device=device,
            overrides=" ".join(f"{k}={'null' if v is None else v}" for k, v in run.overrides.items()),
            error=run.metrics.get("error"),
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


# ------------------------------------------------------------------------------------------------ reports
def build_report(path: str | Path, out: str | Path | None = None, *, plots: bool = True) -> Report:
    """Load the runs under `path`; write report.md, report.csv and (with `plots`) throughput.png and
    latency.png into `out` (default: `path`)."""
    runs = find_runs(path)
    swept = swept_keys(runs)
    frame = runs_frame(runs, swept)
    out_dir = Path(out if out is not None else path).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    done = frame[frame["status"] == "completed"]
    x, series = choose_axes(done, swept)
    files: dict[str, Path] = {}
    if plots:
        subtitle = _context(frame)
        for name, columns in (("throughput", THROUGHPUT), ("latency", LATENCY)):
            title = f"{name.capitalize()} vs {_param_label(x).lower()}" if x else f"{name.capitalize()} per run"
            png = plot_metrics(
                done, columns, out_dir / f"{name}.png", x=x, series=series, title=title, subtitle=subtitle
            )
            if png is not None:
                files[png.name] = png
    markdown = report_markdown(frame, swept, Path(path), list(files))
    (out_dir / "report.md").write_text(markdown)
    frame.to_csv(out_dir / "report.csv", index=False)
    files = {"report.md": out_dir / "report.md", "report.csv": out_dir / "report.csv", **files}
    return Report(frame, swept, x, series, markdown, files)


def report_markdown(frame: pd.DataFrame, swept: Sequence[str], path: Path, images: Iterable[str] = ()) -> str:
    """report.md: the notes (what varied, the best configuration), the table, failed runs, the plots."""
    done = frame[frame["status"] == "completed"]
    failed = frame[frame["status"] != "completed"]
    lines = [
        f"# omnirun report: {path.name}",
        "",
        f"- {len(frame)} run(s) under `{path}`: {len(done)} completed, {len(failed)} not completed.",
        f"- {_context(frame)}",
    ]
    if swept:
        values = "; ".join(f"`{k}` = {', '.join(_show(v) for v in _unique(frame[k]))}" for k in swept)
        lines.append(f"- Varied: {values}.")
    else:
        lines.append("- Nothing varied between the runs' overrides.")
    for column, word in (("output_tokens_per_s", "Best throughput"), ("decode_tokens_per_s", "Best decode rate")):
        if column in done and done[column].notna().any():
            best = done.loc[done[column].idxmax()]
            where = ", ".join(f"{k}={_show(best[k])}" for k in swept) or "the only configuration"
            lines.append(f"- {word}: **{_fmt(best[column])} tokens/s** with {where} (run `{best['run']}`).")
    if "e2e_ms_p50" in done and done["e2e_ms_p50"].notna().any():
        best = done.loc[done["e2e_ms_p50"].idxmin()]
        where = ", ".join(f"{k}={_show(best[k])}" for k in swept) or "the only configuration"
        lines.append(f"- Lowest end-to-end latency (p50): **{_fmt(best['e2e_ms_p50'])} ms** with {where}.")
    if "unstable" in frame and frame["unstable"].eq(True).any():
        flagged = frame.loc[frame["unstable"].eq(True), "run"]
        which = "all" if len(flagged) == frame["unstable"].notna().sum() else ", ".join(f"`{r}`" for r in flagged)
        lines.append(
            f"- Benchmark runs flagged unstable (a large spread or a busy machine; see their benchmark.md): {which}."
        )
    metrics = [m for m in METRICS if m.column in frame and frame[m.column].notna().any()]
    header = ["run", "status", *swept, *(m.short for m in metrics)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        cells = [row["run"], row["status"], *(_show(row[k]) for k in swept), *(_fmt(row[m.column]) for m in metrics)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if len(failed):
        lines += ["", "## Runs that did not complete", ""]
        for _, row in failed.iterrows():
            where = f" ({row['overrides']})" if row["overrides"] else ""
            error = row["error"] if isinstance(row["error"], str) else "no error recorded"
            lines.append(f"- `{row['run']}`{where}: {row['status']}: {error}")
    if images:
        lines += ["", "## Plots", "", *(f"![{Path(name).stem}]({name})" for name in images)]
    return "\n".join(lines) + "\n"


def compare_runs(
    baseline: str | Path, candidate: str | Path, out: str | Path | None = None, *, plots: bool = True
) -> Comparison:
    """Two runs or sweeps side by side: runs matched by their swept overrides, per metric the ratio
    candidate / baseline. Writes compare.md, compare.csv and compare.png into `out` (default: `candidate`)."""
    base, cand = find_runs(baseline), find_runs(candidate)
    keys = list(dict.fromkeys([*swept_keys(base), *swept_keys(cand)]))
    base_by, cand_by = _match_labels(base, keys), _match_labels(cand, keys)
    if not keys and set(base_by) != set(cand_by):  # nothing swept: pair the runs in order
        base_by = {f"#{i + 1}": r for i, r in enumerate(base)}
        cand_by = {f"#{i + 1}": r for i, r in enumerate(cand)}
    heads = {id(r): headline(r) for r in [*base, *cand]}
    columns = [m for m in METRICS if any(heads[id(r)].get(m.column) is not None for r in [*base, *cand])]
    rows = []
    for label in dict.fromkeys([*base_by, *cand_by]):
        b, c = base_by.get(label), cand_by.get(label)
        for metric in columns:
            bv = heads[id(b)].get(metric.column) if b and b.status == "completed" else None
            cv = heads[id(c)].get(metric.column) if c and c.status == "completed" else None
            rows.append(
                {
                    "match": label,
                    "metric": metric.column,
                    "baseline": bv,
                    "candidate": cv,
                    "ratio": cv / bv if bv and cv is not None else math.nan,
                    "better": "higher" if metric.higher_is_better else "lower",
                    "baseline_run": b.label if b else None,
                    "candidate_run": c.label if c else None,
                    "baseline_status": b.status if b else "absent",
                    "candidate_status": c.status if c else "absent",
                }
            )
    table = pd.DataFrame(rows)
    out_dir = Path(out if out is not None else candidate).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = (f"baseline: {Path(baseline).name}", f"candidate: {Path(candidate).name}")
    files: dict[str, Path] = {}
    if plots:
        png = plot_comparison(table, out_dir / "compare.png", names=names)
        if png is not None:
            files[png.name] = png
    markdown = comparison_markdown(table, keys, Path(baseline), Path(candidate), list(files))
    (out_dir / "compare.md").write_text(markdown)
    table.to_csv(out_dir / "compare.csv", index=False)
    files = {"compare.md": out_dir / "compare.md", "compare.csv": out_dir / "compare.csv", **files}
    return Comparison(table, keys, markdown, files)


def comparison_markdown(
    table: pd.DataFrame, keys: Sequence[str], baseline: Path, candidate: Path, images: Iterable[str] = ()
) -> str:
    """compare.md: one row per matched configuration, each cell `baseline → candidate (ratio×)`."""
    labels = list(dict.fromkeys(table["match"]))
    metrics = [m for m in METRICS if m.column in set(table["metric"])]
    throughput = table[(table["metric"] == "output_tokens_per_s") & table["ratio"].notna()]
    unmatched = table[(table["baseline_status"] == "absent") | (table["candidate_status"] == "absent")]
    lines = [
        f"# omnirun comparison: {candidate.name} vs {baseline.name}",
        "",
        f"- baseline: `{baseline}`; candidate: `{candidate}`.",
        f"- Matched by: {', '.join(f'`{k}`' for k in keys) or 'position (nothing was swept)'}; "
        f"{len(labels) - len(set(unmatched['match']))} of {len(labels)} configuration(s) on both sides.",
        "- Ratio = candidate / baseline: above 1 is better for throughputs, below 1 is better for latencies and "
        "memory. For a noise-aware verdict on benchmark runs use `python -m omnirun.compare`.",
    ]
    if len(throughput):
        ratios = [r for r in throughput["ratio"] if r > 0]
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else math.nan
        lines.append(f"- Output throughput ratio, geometric mean over the matched configurations: **{geo:.2f}×**.")
    if len(unmatched):
        lines.append(f"- Present on one side only: {', '.join(f'`{m}`' for m in dict.fromkeys(unmatched['match']))}.")
    lines += ["", "| configuration | " + " | ".join(m.short for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for label in labels:
        part = table[table["match"] == label].set_index("metric")
        cells = []
        for m in metrics:
            r = part.loc[m.column]
            ratio = "" if pd.isna(r["ratio"]) else f" ({r['ratio']:.2f}×)"
            cells.append(f"{_fmt(r['baseline'])} → {_fmt(r['candidate'])}{ratio}")
        lines.append("| " + " | ".join(_cell(c) for c in [label, *cells]) + " |")
    if images:
        lines += ["", *(f"![{Path(name).stem}]({name})" for name in images)]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- plots
def choose_axes(frame: pd.DataFrame, swept: Sequence[str]) -> tuple[str | None, list[str]]:
    """The x-axis key and the series keys, among the swept keys that still vary in `frame`: numeric keys
    first, batch sizes and lengths before the rest, then the key with the most values. (None, []) when
    nothing varies, or when more than three keys vary or that would draw more than MAX_SERIES lines (one bar per
    run then)."""
    varying = [k for k in swept if k in frame and len({_hashable(v) for v in frame[k]}) > 1]
    if not varying:
        return None, []
    ranked = sorted(varying, key=lambda k: _axis_rank(k, list(frame[k])))
    if len(ranked) > 3 or len(_series_groups(frame, ranked[1:])) > MAX_SERIES:  # unreadable: one bar per run
        return None, []
    return ranked[0], ranked[1:]


def plot_metrics(
    frame: pd.DataFrame,
    columns: Sequence[str],
    path: Path,
    *,
    x: str | None,
    series: Sequence[str] = (),
    title: str,
    subtitle: str = "",
) -> Path | None:
    """One panel per metric column: against `x` (a line per series value when numeric, grouped bars when
    categorical), or one horizontal bar per run when `x` is None. Returns the PNG's path, or None with
    nothing to draw."""
    columns = [c for c in columns if c in frame and frame[c].notna().any()]
    if frame.empty or not columns:
        return None
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    height = 4.8 if x is not None else max(3.6, 0.32 * len(frame) + 2.2)
    with rc_context(STYLE):
        fig = Figure(figsize=(max(7.5, 5.4 * len(columns)), height), dpi=150, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(columns), squeeze=False, sharey=x is None)[0]
        for ax, column in zip(axes, columns, strict=True):
            metric = BY_COLUMN[column]
            ax.set_title(metric.title)
            if x is None:
                _run_bars(ax, [str(r) for r in frame["run"]], list(frame[column]))
                ax.set_xlabel(metric.unit)
                ax.xaxis.set_major_formatter(FuncFormatter(_tick))
                continue
            if _is_numeric(frame[x]):
                _lines(ax, frame, x, series, column)
            else:
                categories = [_show(v) for v in _unique(frame[x])]
                values = {
                    name: [_mean(part.loc[part[x].map(_show) == c, column]) for c in categories]
                    for name, part in _series_groups(frame, series)
                }
                _bars(ax, categories, values)
            ax.set_xlabel(_axis_label(x))
            ax.set_ylabel(metric.unit)
            ax.set_ylim(0, ax.dataLim.y1 * 1.15 if ax.dataLim.y1 > 0 else 1)  # room for markers and labels
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        if x is None:
            axes[0].set_ylabel("Run")
        handles, labels = axes[0].get_legend_handles_labels()
        if series and labels:
            fig.legend(
                handles,
                labels,
                loc="outside right center",
                title=" / ".join(_param_label(k) for k in series),
                frameon=False,
            )
        fig.suptitle(title, fontsize=16, fontweight="bold")
        if subtitle:
            fig.supxlabel(subtitle, fontsize=10, color="0.4")
        fig.savefig(path)
    return path


def plot_comparison(table: pd.DataFrame, path: Path, *, names: tuple[str, str]) -> Path | None:
    """Grouped bars, baseline next to candidate for each configuration present on both sides, one panel per
    headline metric, the ratio printed above each candidate bar."""
    columns = [
        c for c in COMPARED if c in set(table["metric"]) and table.loc[table["metric"] == c, "ratio"].notna().any()
    ][:4]
    if not columns:
        return None
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    both = table[(table["baseline_status"] != "absent") & (table["candidate_status"] != "absent")]
    labels = list(dict.fromkeys(both["match"]))  # configurations present on one side only are not drawn
    ncols = min(2, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    width = max(6.0, 1.3 * len(labels) + 2.5)
    with rc_context(STYLE):
        fig = Figure(figsize=(width * ncols, 4.6 * nrows), dpi=150, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, column in zip(axes, columns, strict=False):
            part = table[table["metric"] == column].set_index("match").reindex(labels)
            metric = BY_COLUMN[column]
            values = {names[0]: list(part["baseline"]), names[1]: list(part["candidate"])}
            containers = _bars(ax, [_wrap(label) for label in labels], values, annotate=False)
            ratios = [f"{r:.2f}×" if pd.notna(r) else "" for r in part["ratio"]]
            ax.bar_label(containers[-1], labels=ratios, padding=3, fontsize=10, fontweight="bold")
            ax.margins(y=0.15)
            ax.set_title(metric.title)
            ax.set_ylabel(metric.unit)
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        for ax in axes[len(columns) :]:
            ax.set_visible(False)
        handles, legend = axes[0].get_legend_handles_labels()
        fig.legend(handles, legend, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Candidate vs baseline (ratio = candidate / baseline)", fontsize=15, fontweight="bold")
        fig.savefig(path)
    return path


def _lines(ax: Any, frame: pd.DataFrame, x: str, series: Sequence[str], column: str) -> None:
    """One line per series value against a numeric `x` (means of repeated points); log2 axis over wide ranges."""
    xs_all = sorted({float(v) for v in frame[x].dropna()})
    for name, part in _series_groups(frame, series):
        points = part.dropna(subset=[x, column]).groupby(x)[column].mean().sort_index()
        if len(points):
            ax.plot(
                list(points.index), list(points.values), marker="o", linewidth=2.2, markersize=7, label=name or None
            )
    if xs_all and xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 16:
        ax.set_xscale("log", base=2)
    if len(xs_all) <= 12:
        ax.set_xticks(xs_all, [_show(v) for v in xs_all])
        ax.minorticks_off()


def _bars(ax: Any, categories: list[str], values: dict[str, list[Any]], *, annotate: bool = True) -> list[Any]:
    """Grouped bars: one group per category, one bar per series (`values`: series name → one value per
    category; the name "" draws no legend entry); values printed on the bars when they are few."""
    n = max(1, len(values))
    width = 0.8 / n
    containers = []
    for i, (name, ys) in enumerate(values.items()):
        positions = [j + (i - (n - 1) / 2) * width for j in range(len(categories))]
        heights = [float(y) if y is not None and pd.notna(y) else 0.0 for y in ys]
        bars = ax.bar(positions, heights, width * 0.92, label=name or None)
        if annotate and len(categories) * n <= 16:
            labels = [_bar_label(y) if h else "" for y, h in zip(ys, heights, strict=True)]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=9)
        containers.append(bars)
    ax.set_xticks(range(len(categories)), categories)
    if max(len(line) for c in categories for line in c.split("\n")) * len(categories) > 60:  # long labels: slanted
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.grid(axis="x", visible=False)
    return containers


def _run_bars(ax: Any, runs: list[str], values: list[Any]) -> None:
    """One horizontal bar per run, top to bottom in run order, the value at the end of each bar."""
    widths = [float(v) if v is not None and pd.notna(v) else 0.0 for v in values]
    bars = ax.barh(range(len(runs)), widths, 0.7)
    if len(runs) <= 40:
        ax.bar_label(bars, labels=[_bar_label(w) if w else "" for w in widths], padding=3, fontsize=9)
    ax.set_yticks(range(len(runs)), runs)
    ax.set_ylim(len(runs) - 0.5, -0.5)
    ax.set_xlim(0, max(widths) * 1.2 if max(widths) > 0 else 1)
    ax.grid(axis="y", visible=False)


def _series_groups(frame: pd.DataFrame, series: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not series:
        return [("", frame)]
    keys = frame[list(series)].map(_show).agg(" / ".join, axis=1)
    order = sorted(dict.fromkeys(keys), key=lambda s: _natural(s.split(" / ")))
    return [(name, frame[keys == name]) for name in order]


# ------------------------------------------------------------------------------------------------ helpers
def _match_labels(runs: Sequence[Run], keys: Sequence[str]) -> dict[str, Run]:
    out: dict[str, Run] = {}
    for run in runs:
        label = " ".join(f"{k}={_show(run.param(k))}" for k in keys) or run.label
        n, unique = 1, label
        while unique in out:  # the same configuration twice: keep both, numbered
            n += 1
            unique = f"{label} #{n}"
        out[unique] = run
    return out


def _axis_rank(key: str, values: Sequence[Any]) -> tuple[int, int, int]:
    leaf = key.rsplit(".", 1)[-1]
    priority = X_PRIORITY.index(leaf) if leaf in X_PRIORITY else len(X_PRIORITY)
    return (0 if _is_numeric(values) else 1, priority, -len({_hashable(v) for v in values}))


def _is_numeric(values: Iterable[Any]) -> bool:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(present) and all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present)


def _context(frame: pd.DataFrame) -> str:
    parts = []
    for column, word in (("model", "model"), ("task", "task"), ("device", "device")):
        values = [str(v) for v in _unique(frame[column]) if v is not None and pd.notna(v)] if column in frame else []
        if values:
            parts.append(f"{word} {values[0]}" if len(values) == 1 else f"{word}s {', '.join(values)}")
    return " · ".join(parts)


def _param_label(key: str | None) -> str:
    return PARAM_LABELS.get(key or "", key or "run")


def _axis_label(key: str) -> str:
    label = _param_label(key)
    return label if label == key else f"{label} ({key})"


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: dict[Any, Any] = {}
    for v in values:
        seen.setdefault(_hashable(v), v)
    items = list(seen.values())
    if _is_numeric(items):
        return sorted(items)
    return items


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict | list) else value


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _show(value: Any) -> str:
    """A parameter value for labels: numbers without trailing zeros, paths by their last component."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return _short(value) if isinstance(value, str) else str(value)


def _short(value: Any) -> Any:
    if isinstance(value, str) and "/" in value:
        return value.rstrip("/").rsplit("/", 1)[-1]
    return value


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return str(value)
    magnitude = abs(value)
    return f"{value:,.0f}" if magnitude >= 1000 else f"{value:.1f}" if magnitude >= 100 else f"{value:.2f}"


def _bar_label(value: float) -> str:
    magnitude = abs(value)
    return f"{value:,.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _tick(value: float, _pos: object = None) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def _wrap(label: str) -> str:
    """`task.batch_size=1 generation.temperature=0.2` → `batch_size=1` and `temperature=0.2` on two lines."""
    parts = [p.partition("=") for p in label.split(" ")]
    return "\n".join(f"{k.rsplit('.', 1)[-1]}={v}" if sep else k for k, sep, v in parts)


def _natural(parts: Iterable[str]) -> list[tuple[int, Any]]:
    key: list[tuple[int, Any]] = []
    for part in parts:
        key += [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", part) if t]
    return key


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


# -------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m omnirun.report",
        description="Tables and plots of omnirun runs and sweeps; with two directories, a comparison.",
    )
    parser.add_argument("path", help="a run directory, a sweep directory or any folder holding runs")
    parser.add_argument("candidate", nargs="?", help="a second run or sweep to compare against the first")
    parser.add_argument("--out", help="where to write (default: the directory, or the candidate's)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    try:
        if args.candidate:
            comparison = compare_runs(args.path, args.candidate, args.out, plots=not args.no_plots)
            print(comparison.markdown)
            print(f"comparison: {comparison.files['compare.md']}")
        else:
            report = build_report(args.path, args.out, plots=not args.no_plots)
            print(report.markdown)
            print(f"report: {report.files['report.md']}")
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
