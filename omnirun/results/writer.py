"""Appending result rows to outputs.jsonl, window by window, each window in one write followed by fsync, and
accumulating what the run's metrics need from them (`RunTotals`): no row is kept in memory."""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnirun import structured
from omnirun.errors import OmnirunError
from omnirun.results import strict
from omnirun.results.schema import ResultRow, Stats
from omnirun.secrets import secret_forms


class ResultWriter:
    """Appends one JSON line per finished record. Lines are held until `flush()` (one window), which writes
    them in one call and fsyncs, so a killed run leaves whole windows (plus at most one torn line, which resume
    drops). Rows are not kept: `totals` accumulates what the metrics need as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("ab")
        self._pending: list[bytes] = []
        self._secrets = secret_forms()
        self.totals = RunTotals()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, row: ResultRow) -> None:
        self._pending.append(encode(row.to_json(), self._secrets))
        self.totals.add(row)

    def write_encoded(self, lines: list[bytes]) -> None:
        """Rows another writer encoded (a cluster worker's batch, in input order): added to the totals, then
        written in one call and fsynced with whatever is pending."""
        for line in lines:
            self.totals.add(ResultRow.from_json(json.loads(line)))
        self._pending.extend(lines)
        self.flush()

    def flush(self) -> None:
        """Write the pending rows in one call and fsync; a failing disk is one line that keeps what was written."""
        try:
            if self._pending:
                self._file.write(b"".join(self._pending))
                self._pending.clear()
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OmnirunError(
                f"cannot write {self.path}: {exc.strerror or exc}; the records written before are kept "
                "(free space, then resume=<run dir>)"
            ) from exc

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


def encode(obj: dict[str, Any], secrets: list[str] | None = None) -> bytes:
    """One strict JSON line as UTF-8 (`strict.dumps`): secrets redacted, NaN as null, and a lone surrogate (an
    input such as `{"prompt": "\\ud800"}`, whose record is an error row saying so) as U+FFFD."""
    return (strict.dumps(obj, secrets=secrets) + "\n").encode("utf-8")


MAX_DISTINCT = 20_000
"""Distinct values a `Distribution` keeps exactly before it bins them."""
BIN_RATIO = 1.002
"""Bins past MAX_DISTINCT are powers of this ratio: a binned percentile is within 0.1% of the exact one."""


class Distribution:
    """Latencies kept for their mean and percentiles in bounded memory: each distinct value with its count
    (records of one batch share their batch's value, so a run has about one value per batch), exactly, up to
    MAX_DISTINCT distinct values; past that, each value counts in a log-scale bin (at most ~20,000 bins for
    1 ns to 10^6 s), so a percentile is within 0.1% of the exact one. Mergeable (per-rank distributions)."""

    def __init__(self) -> None:
        self.counts: dict[float, int] = {}
        self.n = 0
        self.total = 0.0
        self.binned = False

    def add(self, value: float, count: int = 1) -> None:
        self.n += count
        self.total += value * count
        key = bin_of(value) if self.binned else value
        self.counts[key] = self.counts.get(key, 0) + count
        if not self.binned and len(self.counts) > MAX_DISTINCT:
            exact, self.counts, self.binned = self.counts, {}, True
            for v, c in exact.items():
                key = bin_of(v)
                self.counts[key] = self.counts.get(key, 0) + c

    def merge(self, other: Distribution) -> None:
        total = self.total + other.total
        for value, count in other.counts.items():
            self.add(value, count)
        self.binned = self.binned or other.binned
        self.total = total

    def stats(self) -> Stats | None:
        """As `Stats.of` over every value added (the same numbers while exact)."""
        if not self.n:
            return None
        keys = sorted(self.counts)
        ends = list(itertools.accumulate(self.counts[k] for k in keys))  # ends[i]: values up to keys[i]

        def at(rank: int) -> float:
            return keys[bisect.bisect_right(ends, rank)]

        def q(p: float) -> float:
            pos = (self.n - 1) * p
            lo = int(pos)
            a, b = at(lo), at(min(lo + 1, self.n - 1))
            return a + (b - a) * (pos - lo)

        if self.binned:
            mean = self.total / self.n
        else:  # fsum of every value, as statistics.fmean computes it
            mean = math.fsum(itertools.chain.from_iterable(itertools.repeat(k, self.counts[k]) for k in keys)) / self.n
        return Stats(mean, q(0.5), q(0.9), q(0.99))


def bin_of(value: float) -> float:
    """The representative of `value`'s log-scale bin (zero and negative values keep their own)."""
    if value <= 0:
        return value
    return float(BIN_RATIO ** round(math.log(value, BIN_RATIO)))


@dataclass
class RunTotals:
    """What `summarize` needs from the rows, accumulated one row at a time (the rows themselves are not kept)."""

    num_samples: int = 0
    num_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    audio_s: float | None = None
    denoising_steps: int = 0
    task_rows: bool = False
    """Some row is a non-generation task's."""
    e2e_s_all: float = 0.0
    """The e2e of every row (errors: 0), in seconds: the model's time of an interactive chat."""
    ttft_ms: Distribution = field(default_factory=Distribution)
    tpot_ms: Distribution = field(default_factory=Distribution)
    e2e_ms: Distribution = field(default_factory=Distribution)
    valid: dict[str, list[int]] = field(default_factory=dict)
    """Per format type: [outputs that follow their response_format, outputs asked for one]."""
    reasoning_tokens: int | None = None
    """Output tokens spent thinking, over the rows whose thinking was split off (None: no such row)."""

    def add(self, row: ResultRow) -> None:
        self.num_samples += 1
        self.task_rows = self.task_rows or row.inputs is not None
        self.e2e_s_all += (row.e2e_ms or 0.0) / 1000
        if not row.ok:
            self.num_errors += 1
            return
        self.output_tokens += row.output_tokens or 0
        self.input_tokens += row.input_tokens or 0
        if row.audio_s is not None:
            self.audio_s = (self.audio_s or 0) + row.audio_s
        self.denoising_steps += row.denoising_steps or 0
        if row.reasoning_tokens is not None:
            self.reasoning_tokens = (self.reasoning_tokens or 0) + row.reasoning_tokens
        fmt = row.response_format
        if fmt is not None and fmt.get("type") not in (None, "text") and row.output is not None:
            count = self.valid.setdefault(str(fmt["type"]), [0, 0])
            count[0] += structured.is_valid(row.output, fmt)
            count[1] += 1
        for dist, value in ((self.ttft_ms, row.ttft_ms), (self.tpot_ms, row.tpot_ms), (self.e2e_ms, row.e2e_ms)):
            if value is not None:
                dist.add(value)

    def merge(self, other: RunTotals) -> None:
        """Add another rank's totals."""
        for name in ("num_samples", "num_errors", "input_tokens", "output_tokens", "denoising_steps", "e2e_s_all"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.audio_s is not None:
            self.audio_s = (self.audio_s or 0) + other.audio_s
        if other.reasoning_tokens is not None:
            self.reasoning_tokens = (self.reasoning_tokens or 0) + other.reasoning_tokens
        self.task_rows = self.task_rows or other.task_rows
        for kind, (valid, total) in other.valid.items():
            count = self.valid.setdefault(kind, [0, 0])
            count[0], count[1] = count[0] + valid, count[1] + total
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            getattr(self, name).merge(getattr(other, name))


def read_rows(path: Path) -> list[ResultRow]:
    """The rows of an outputs.jsonl file (complete lines only)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            rows.append(ResultRow.from_json(json.loads(line)))
    return rows
