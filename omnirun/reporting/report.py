"""The two writers: `build_report` (one set of runs → report.md, report.csv, plots) and `compare_runs` (two sets
side by side → compare.md, compare.csv, compare.png)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from omnirun.reporting.compare import Ratio, Result, compare
from omnirun.reporting.load import find_runs, runs_frame, swept_keys
from omnirun.reporting.plots import LATENCY, THROUGHPUT, choose_axes, param_label, plot_comparison, plot_metrics
from omnirun.reporting.tables import comparison_markdown, context, report_markdown


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
    result: Result | None = None
    """The comparison tool's full result: benchmark verdicts and output comparisons where the runs have them."""


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
        subtitle = context(frame)
        for name, columns in (("throughput", THROUGHPUT), ("latency", LATENCY)):
            title = f"{name.capitalize()} vs {param_label(x).lower()}" if x else f"{name.capitalize()} per run"
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


def compare_runs(
    baseline: str | Path, candidate: str | Path, out: str | Path | None = None, *, plots: bool = True
) -> Comparison:
    """Two runs or sweeps side by side, as `python -m omnirun.compare` matches and compares them: per headline
    metric the ratio candidate / baseline, plus the benchmark verdict and the output comparison where the runs
    have them. Writes compare.md, compare.csv and compare.png into `out` (default: `candidate`)."""
    result = compare(baseline, candidate, require_match=False)
    rows = [{**asdict(r), "ratio": math.nan if r.ratio is None else r.ratio} for r in result.ratios]
    table = pd.DataFrame(rows, columns=[f.name for f in fields(Ratio)])
    out_dir = Path(out if out is not None else candidate).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = (f"baseline: {Path(baseline).name}", f"candidate: {Path(candidate).name}")
    files: dict[str, Path] = {}
    if plots and len(table):
        png = plot_comparison(table, out_dir / "compare.png", names=names)
        if png is not None:
            files[png.name] = png
    markdown = comparison_markdown(table, result, list(files))
    (out_dir / "compare.md").write_text(markdown)
    table.to_csv(out_dir / "compare.csv", index=False)
    files = {"compare.md": out_dir / "compare.md", "compare.csv": out_dir / "compare.csv", **files}
    return Comparison(table, result.matching.keys, markdown, files, result)
