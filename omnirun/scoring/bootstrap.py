"""Seeded bootstrap: the standard error of a score, and a paired confidence interval of the difference between
two runs' scores on the same rows.

Both resample rows with replacement (numpy's PCG64 generator seeded with `seed`, so a seed gives the same
figures on every machine). The standard error is the sample standard deviation (n - 1) of the statistic over
the resamples, as lm-evaluation-harness's `bootstrap_stderr` reports it; the statistic is the mean of the rows'
scores, or for a corpus metric the corpus score of the resampled rows' summed statistics. The paired interval
applies the same resample to both runs, so the noise the two share (hard and easy rows) cancels, as in
sacrebleu's paired bootstrap resampling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_ITERS = 1000
"""Resamples by default: the standard error's own relative error is about 1/sqrt(2 * iters), ~2% at 1000."""
CHUNK_CELLS = 4_000_000
"""At most this many resample-by-row counts are held at once (bounds memory for large files)."""

Array = npt.NDArray[np.float64]
Statistic = Callable[[Array], Array]
"""Summed per-row values of each resample (resamples x columns) -> the statistic of each resample."""


def resample_counts(n: int, iters: int, seed: int) -> Iterator[Array]:
    """How many times each of `n` rows is drawn in each resample: chunks of a (iters x n) matrix of counts."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // max(n, 1))
    done = 0
    while done < iters:
        size = min(per_chunk, iters - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        done += size


def mean_statistic(n: int) -> Statistic:
    return lambda sums: sums[:, 0] / n


def as_columns(values: npt.ArrayLike) -> Array:
    """Per-row values as an (n x k) matrix (a plain list of scores is one column)."""
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def bootstrap_stderr(
    values: npt.ArrayLike,
    statistic: Statistic | None = None,
    *,
    iters: int = DEFAULT_ITERS,
    seed: int = 0,
) -> float | None:
    """The standard error of `statistic` (default: the mean) over rows by bootstrap; None with fewer than two
    rows (nothing to resample). `values`: one score per row, or per-row statistics (rows x k) that `statistic`
    turns into a score from their sums."""
    rows = as_columns(values)
    n = rows.shape[0]
    if n < 2:
        return None
    stat = statistic or mean_statistic(n)
    samples = np.concatenate([stat(counts @ rows) for counts in resample_counts(n, iters, seed)])
    return float(np.std(samples, ddof=1))


@dataclass(frozen=True)
class PairedInterval:
    """B - A with a paired bootstrap confidence interval (percentile method)."""

    a: float
    b: float
    diff: float
    low: float
    high: float
    level: float
    n: int


def paired_bootstrap(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    statistic: Statistic | None = None,
    *,
    iters: int = DEFAULT_ITERS,
    seed: int = 0,
    level: float = 0.95,
) -> PairedInterval:
    """The difference statistic(B) - statistic(A) over the same rows (row i of `a` and of `b` score the same
    input) and its `level` confidence interval from resampling rows jointly."""
    rows_a, rows_b = as_columns(a), as_columns(b)
    n = rows_a.shape[0]
    if rows_b.shape[0] != n or n == 0:
        raise ValueError(
            f"paired bootstrap needs the same non-zero number of rows in both runs, got {n} and {len(rows_b)}"
        )
    stat = statistic or mean_statistic(n)
    value_a = float(stat(rows_a.sum(axis=0, keepdims=True))[0])
    value_b = float(stat(rows_b.sum(axis=0, keepdims=True))[0])
    diffs = np.concatenate(
        [stat(counts @ rows_b) - stat(counts @ rows_a) for counts in resample_counts(n, iters, seed)]
    )
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return PairedInterval(value_a, value_b, value_b - value_a, float(low), float(high), level, n)
