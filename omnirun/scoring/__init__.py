"""Scoring outputs against references (`task=score`) and comparing two scored runs; no model, no Hydra.

`sources.open_source(path)` reads the rows, `score.score_rows(rows, ScoreOptions(...))` scores them and
summarises `{metric: {mean, stderr, n}}`, `compare.compare_scores(a, b, max_drop=X)` is the drift gate.
"""

from omnirun.scoring.compare import ScoreComparison, ScoreDiff, compare_scores
from omnirun.scoring.metrics import METRICS, MetricSpec
from omnirun.scoring.options import ScoreOptions
from omnirun.scoring.score import MetricSummary, ScoredRow, Scorer, ScoreSummary, score_rows
from omnirun.scoring.sources import Source, SourceKind, SourceRow, open_source

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricSummary",
    "ScoreComparison",
    "ScoreDiff",
    "ScoreOptions",
    "ScoreSummary",
    "ScoredRow",
    "Scorer",
    "Source",
    "SourceKind",
    "SourceRow",
    "compare_scores",
    "open_source",
    "score_rows",
]
