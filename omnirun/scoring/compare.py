"""Quality drift between two scored runs: per metric, each run's value, the difference B - A and its paired
bootstrap confidence interval over the rows both runs scored (joined by row id).

A metric *dropped* when the whole interval lies below minus its allowed drop: B is worse than A by more than
that beyond the resampling noise. `max_drop` is a fraction of the metric's full scale, so one value serves every
metric: 0.02 allows 0.02 of exact_match (a rate in 0-1) and 2 points of bleu (0-100); a mapping gives a metric
its own allowance in its own units. A corpus metric
(bleu, chrf) is recomputed from the rows' summed statistics on each resample, so its difference is one of corpus
scores, not of sentence-score means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnirun.errors import InputError
from omnirun.scoring.bootstrap import DEFAULT_ITERS, PairedInterval, paired_bootstrap
from omnirun.scoring.metrics import METRICS
from omnirun.scoring.score import ScoredRow, corpus_statistic


@dataclass(frozen=True)
class ScoreDiff:
    metric: str
    interval: PairedInterval
    """a, b, diff = b - a, its confidence interval (low, high) and the rows compared (n)."""
    dropped: bool
    """The interval's upper bound is below -allowed."""
    allowed: float | None = None
    """The drop allowed for this metric, in its own units (None: no gate)."""

    def to_json(self) -> dict[str, Any]:
        i = self.interval
        return {
            "metric": self.metric,
            "a": i.a,
            "b": i.b,
            "diff": i.diff,
            "ci_low": i.low,
            "ci_high": i.high,
            "level": i.level,
            "n": i.n,
            "allowed": self.allowed,
            "dropped": self.dropped,
        }


@dataclass
class ScoreComparison:
    diffs: list[ScoreDiff]
    max_drop: float | dict[str, float] | None
    only_a: int = 0
    """Rows scored in A only (missing or an error row in B): not compared."""
    only_b: int = 0
    skipped: list[str] = field(default_factory=list)
    """Metrics that only one run computed, or no row of both."""

    @property
    def failed(self) -> bool:
        return any(d.dropped for d in self.diffs)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_drop": self.max_drop,
            "scores": [d.to_json() for d in self.diffs],
            "only_a": self.only_a,
            "only_b": self.only_b,
            "skipped": self.skipped,
            "failed": self.failed,
        }


def allowance(metric: str, max_drop: float | Mapping[str, float] | None) -> float | None:
    """The drop allowed for `metric` in its own units."""
    if max_drop is None:
        return None
    if isinstance(max_drop, Mapping):
        return None if metric not in max_drop else float(max_drop[metric])
    spec = METRICS.get(metric)
    return float(max_drop) * (spec.scale if spec else 1.0)


def by_id(rows: Iterable[ScoredRow], side: str) -> dict[str, ScoredRow]:
    """The scored rows by id (error rows left out); InputError when an id repeats."""
    out: dict[str, ScoredRow] = {}
    for row in rows:
        if row.id in out:
            raise InputError(f"run {side} scores row id {row.id!r} twice; each row must have a unique id to be paired")
        if row.error is None:
            out[row.id] = row
    return out


def compare_scores(
    a: Iterable[ScoredRow],
    b: Iterable[ScoredRow],
    *,
    max_drop: float | Mapping[str, float] | None = None,
    iters: int = DEFAULT_ITERS,
    seed: int = 0,
    level: float = 0.95,
) -> ScoreComparison:
    """Each metric both runs scored, compared over the rows both scored (A is the baseline). `max_drop`: a
    fraction of each metric's scale, or {metric: drop in its units} (a metric not named is not gated)."""
    rows_a, rows_b = by_id(a, "A"), by_id(b, "B")
    ids = [i for i in rows_a if i in rows_b]
    gate = dict(max_drop) if isinstance(max_drop, Mapping) else max_drop
    result = ScoreComparison([], gate, len(rows_a.keys() - rows_b.keys()), len(rows_b.keys() - rows_a.keys()))
    metrics = sorted({m for r in rows_a.values() for m in r.scores} | {m for r in rows_b.values() for m in r.scores})
    for metric in metrics:
        pairs = [(rows_a[i], rows_b[i]) for i in ids if metric in rows_a[i].scores and metric in rows_b[i].scores]
        if not pairs:
            result.skipped.append(metric)
            continue
        spec = METRICS.get(metric)
        if spec is not None and spec.corpus is not None and all(metric in x.corpus_stats for p in pairs for x in p):
            statistic = corpus_statistic(spec.corpus())
            values_a = np.array([x.corpus_stats[metric] for x, _ in pairs])
            values_b = np.array([y.corpus_stats[metric] for _, y in pairs])
            interval = paired_bootstrap(values_a, values_b, statistic, iters=iters, seed=seed, level=level)
        else:
            values_a = np.array([x.scores[metric] for x, _ in pairs])
            values_b = np.array([y.scores[metric] for _, y in pairs])
            interval = paired_bootstrap(values_a, values_b, iters=iters, seed=seed, level=level)
        allowed = allowance(metric, max_drop)
        dropped = allowed is not None and interval.high < -allowed
        result.diffs.append(ScoreDiff(metric, interval, dropped, allowed))
    return result
