"""Reports and comparisons of recorded runs, read from their run directories (no model is loaded).

- `load`: find runs under a path and read each run directory into a typed `Run`; the runs table.
- `compare`: THE comparison tool (`python -m omnirun.compare`): runs matched across two sides, benchmark
  verdicts, headline-metric ratios; `outputs`: two output runs record by record.
- `tables`: the markdown of report.md, compare.md and the comparison tool; `plots`: the figures.
- `report`: `build_report` and `compare_runs`, which write the files; `__main__`: the command lines.

`omnirun.report` and `omnirun.compare` are the entry modules (`python -m omnirun.report ...`,
`python -m omnirun.compare ...`) and re-export this package's API:

    from omnirun.report import build_report, compare_runs, load_runs

    runs = load_runs("outputs/sweeps/2025-01-01_12-00-00-000000")   # DataFrame, one row per run
    report = build_report("outputs/sweeps/...")                    # writes the files; .runs .markdown .files
    comparison = compare_runs(baseline_dir, candidate_dir)         # .table: one row per (config, metric)
"""

from omnirun.reporting.compare import Result, compare
from omnirun.reporting.load import ReportError, Run, find_runs, load_runs, read_run
from omnirun.reporting.outputs import OutputComparison, compare_outputs
from omnirun.reporting.plots import choose_axes, plot_comparison, plot_metrics
from omnirun.reporting.report import Comparison, Report, build_report, compare_runs

__all__ = [
    "Comparison",
    "OutputComparison",
    "Report",
    "ReportError",
    "Result",
    "Run",
    "build_report",
    "choose_axes",
    "compare",
    "compare_outputs",
    "compare_runs",
    "find_runs",
    "load_runs",
    "plot_comparison",
    "plot_metrics",
    "read_run",
]
