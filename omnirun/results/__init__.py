"""What a run produces, as types: result rows, run metrics, benchmark reports, and the timers that measure
them."""

from omnirun.results.benchmark import BenchmarkReport, Phase, PhaseStats
from omnirun.results.schema import MemoryMetrics, ResultRow, RunMetrics, Stats, Status, summarize
from omnirun.results.writer import ResultWriter, read_rows

__all__ = [
    "BenchmarkReport",
    "MemoryMetrics",
    "Phase",
    "PhaseStats",
    "ResultRow",
    "ResultWriter",
    "RunMetrics",
    "Stats",
    "Status",
    "read_rows",
    "summarize",
]
