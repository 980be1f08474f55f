"""`python -m omnirun.report <run, sweep or any folder of runs> [<second dir>] [--out DIR] [--no-plots]`.

One directory: `report.md` (a table, what was swept, the best configuration), `report.csv` and the plots
`throughput.png` and `latency.png`, by default into that directory. Two directories: `compare.md`,
`compare.csv` and `compare.png` with candidate / baseline ratios (runs matched as `python -m omnirun.compare`
matches them), by default into the candidate's directory.

The code lives in `omnirun.reporting`; this module is the command's entry point and keeps the Python API
(`build_report`, `compare_runs`, `load_runs`, ...) importable from `omnirun.report`.
"""

from omnirun.reporting import (
    Comparison,
    Report,
    ReportError,
    Run,
    build_report,
    choose_axes,
    compare_runs,
    find_runs,
    load_runs,
    plot_comparison,
    plot_metrics,
    read_run,
)
from omnirun.reporting.cli import main

__all__ = [
    "Comparison",
    "Report",
    "ReportError",
    "Run",
    "build_report",
    "choose_axes",
    "compare_runs",
    "find_runs",
    "load_runs",
    "main",
    "plot_comparison",
    "plot_metrics",
    "read_run",
]

if __name__ == "__main__":
    main()
