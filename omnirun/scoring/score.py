"""Scoring rows: each row's scores, then the summary `{metric: {mean, stderr, n}}`, overall and by group.

A row that cannot be scored (no output, no reference, an output that is not a string, a failed record) is an
error row: it has no scores, counts in `errors`, and is left out of every metric's `n`; it is never dropped.
The summary's `mean` is the mean of the rows' scores, except for a corpus metric (bleu, chrf), where it is the
corpus score of the scored rows (see `omnirun.scoring.metrics`); `aggregate` says which. `stderr` is the seeded
bootstrap standard error of that value (`omnirun.scoring.bootstrap`), None with fewer than two rows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnirun.scoring.bootstrap import Array, Statistic, bootstrap_stderr
from omnirun.scoring.metrics import METRICS, Corpus, MetricSpec, RowProblem
from omnirun.scoring.options import ScoreOptions
from omnirun.scoring.sources import SourceRow
from omnirun.scoring.text import extract

MISSING = "<missing>"
"""The group of rows that lack a `group_by` field."""


@dataclass
class ScoredRow:
    """One row of a score run's outputs.jsonl."""

    id: str
    output: str | None = None
    references: list[str] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    groups: dict[str, str] = field(default_factory=dict)
    """The row's value of each `group_by` field (as text)."""
    extracted: str | None = None
    """With `task.extract`: the part of the output that was scored (None: the pattern did not match)."""
    corpus_stats: dict[str, list[float]] = field(default_factory=dict)
    """A corpus metric's sufficient statistics for this row (sacrebleu's segment statistics)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "output": self.output, "references": self.references}
        if self.extracted is not None:
            out["extracted"] = self.extracted
        out.update(self.groups)
        out["scores"] = self.scores
        if self.corpus_stats:
            out["corpus_stats"] = self.corpus_stats
        out["error"] = self.error
        return out

    @staticmethod
    def from_json(obj: dict[str, Any]) -> ScoredRow:
        known = {"id", "output", "references", "extracted", "scores", "corpus_stats", "error"}
        return ScoredRow(
            id=str(obj["id"]),
            output=obj.get("output"),
            references=obj.get("references"),
            scores={k: float(v) for k, v in (obj.get("scores") or {}).items()},
            error=obj.get("error"),
            groups={k: str(v) for k, v in obj.items() if k not in known},
            extracted=obj.get("extracted"),
            corpus_stats=obj.get("corpus_stats") or {},
        )


@dataclass(frozen=True)
class MetricSummary:
    mean: float | None
    """The mean of the rows' scores, or a corpus metric's corpus score (None: no row scored)."""
    stderr: float | None
    n: int
    """Rows scored."""
    aggregate: str = "mean"
    """`mean` or `corpus`."""

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "stderr": self.stderr, "n": self.n, "aggregate": self.aggregate}


@dataclass
class ScoreSummary:
    scores: dict[str, MetricSummary]
    by_group: dict[str, dict[str, dict[str, MetricSummary]]]
    rows: int
    errors: int
    bootstrap_iters: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        def block(scores: dict[str, MetricSummary]) -> dict[str, Any]:
            return {name: s.to_json() for name, s in scores.items()}

        return {
            "scores": block(self.scores),
            "by_group": {f: {v: block(s) for v, s in groups.items()} for f, groups in self.by_group.items()},
            "rows": self.rows,
            "errors": self.errors,
            "bootstrap_iters": self.bootstrap_iters,
            "seed": self.seed,
        }


class Scorer:
    """Scores rows one by one with validated options (`ScoreOptions.validate()`), then summarises them."""

    def __init__(self, options: ScoreOptions) -> None:
        self.options = options.validate()
        self.context = options.context()
        self.extract = options.extract_pattern
        self.corpora = {spec.name: spec.corpus() for spec in options.specs if spec.corpus is not None}

    def chunks(self, rows: Iterable[SourceRow]) -> Iterator[list[SourceRow]]:
        """`rows` in lists as `score_many` takes them: a judge's batch, else one row each."""
        size = self.options.judge.batch_size if self.context.judge is not None else 1
        it = iter(rows)
        while chunk := list(itertools.islice(it, size)):
            yield chunk

    def close(self) -> None:
        """Unload the judge model, if one was loaded, and close its cache."""
        if self.context.judge is not None:
            self.context.judge.close()

    def score(self, row: SourceRow) -> ScoredRow:
        """One row's scores, or its error row."""
        return self.score_many([row])[0]

    def score_many(self, rows: list[SourceRow]) -> list[ScoredRow]:
        """Several rows' scores; a judge's missing judgments are generated for them in batches first."""
        prepared = [self.prepare(row) for row in rows]
        if self.context.judge is not None:
            self.context.judge.prefetch((p, refs) for out, p, refs in prepared if out.error is None)
        return [out if out.error is not None else self.finish(out, p, refs) for out, p, refs in prepared]

    def prepare(self, row: SourceRow) -> tuple[ScoredRow, str, list[str]]:
        """The row's output and references as they are scored (after `task.extract`), or its error row."""
        opts = self.options
        groups = {name: group_value(row.fields, name) for name in opts.group_by}
        out = ScoredRow(row.id, groups=groups, error=row.error)
        if out.error is not None:
            return out, "", []
        output = row.fields.get(opts.output_field)
        if not isinstance(output, str):
            found = "it is missing" if output is None else f"got {type(output).__name__}"
            out.error = f"output field {opts.output_field!r} must be a string; {found} (task.output_field)"
            return out, "", []
        out.output = output
        references: list[str] = []
        if opts.needs_reference:
            refs, problem = read_references(row.fields, opts.reference_field)
            if problem:
                out.error = problem
                return out, "", []
            references = out.references = refs
        prediction = output
        if self.extract is not None:
            out.extracted = extract(output, self.extract)
            prediction = out.extracted or ""
            references = [extract(ref, self.extract) or ref for ref in references]
        return out, prediction, references

    def finish(self, out: ScoredRow, prediction: str, references: list[str]) -> ScoredRow:
        """Every metric's score of a prepared row (a metric's RowProblem makes it an error row)."""
        opts = self.options
        try:
            for spec in opts.specs:
                out.scores[spec.name] = spec.row(prediction, references, self.context)
                if spec.name in self.corpora:
                    out.corpus_stats[spec.name] = self.corpora[spec.name].row_stats(prediction, references)
        except RowProblem as exc:
            out.scores, out.corpus_stats, out.error = {}, {}, str(exc)
        return out

    def summarize(self, rows: list[ScoredRow]) -> ScoreSummary:
        opts = self.options
        by_group: dict[str, dict[str, dict[str, MetricSummary]]] = {}
        for name in opts.group_by:
            values = sorted({r.groups[name] for r in rows})
            by_group[name] = {v: self.summarize_metrics([r for r in rows if r.groups[name] == v]) for v in values}
        errors = sum(1 for r in rows if r.error is not None)
        summary = self.summarize_metrics(rows)
        return ScoreSummary(summary, by_group, len(rows), errors, opts.bootstrap_iters, opts.seed)

    def summarize_metrics(self, rows: list[ScoredRow]) -> dict[str, MetricSummary]:
        return {spec.name: self.summarize_metric(spec, rows) for spec in self.options.specs}

    def summarize_metric(self, spec: MetricSpec, rows: list[ScoredRow]) -> MetricSummary:
        scored = [r for r in rows if spec.name in r.scores]
        iters, seed = self.options.bootstrap_iters, self.options.seed
        if not scored:
            return MetricSummary(None, None, 0, "corpus" if spec.corpus else "mean")
        corpus = self.corpora.get(spec.name)
        if corpus is None:
            values = np.array([r.scores[spec.name] for r in scored])
            stderr = bootstrap_stderr(values, iters=iters, seed=seed) if iters else None
            return MetricSummary(float(values.mean()), stderr, len(scored))
        stats = np.array([r.corpus_stats[spec.name] for r in scored])
        value = corpus.score(list(stats.sum(axis=0)))
        stderr = bootstrap_stderr(stats, corpus_statistic(corpus), iters=iters, seed=seed) if iters else None
        return MetricSummary(value, stderr, len(scored), "corpus")


def corpus_statistic(corpus: Corpus) -> Statistic:
    """Summed statistics of each resample -> its corpus score."""

    def statistic(sums: Array) -> Array:
        return np.array([corpus.score(list(row)) for row in sums])

    return statistic


def score_rows(rows: Iterable[SourceRow], options: ScoreOptions) -> tuple[list[ScoredRow], ScoreSummary]:
    """Every row's scores (error rows included, in order) and the summary."""
    scorer = Scorer(options)
    try:
        scored = [one for chunk in scorer.chunks(rows) for one in scorer.score_many(chunk)]
    finally:
        scorer.close()
    return scored, scorer.summarize(scored)


def read_references(fields: dict[str, Any], name: str) -> tuple[list[str], str | None]:
    """The row's references as texts, or the problem that makes the row an error row."""
    value = fields.get(name)
    if value is None:
        return [], f"reference field {name!r} is missing (task.reference_field; or join a file with task.references)"
    values = value if isinstance(value, list) else [value]
    if not values:
        return [], f"reference field {name!r} is an empty list; give at least one reference"
    texts = [reference_text(v) for v in values]
    if any(t is None for t in texts):
        kinds = sorted({type(v).__name__ for v in values})
        return [], f"reference field {name!r} must be a string, a number or a list of them, got {', '.join(kinds)}"
    return [t for t in texts if t is not None], None


def reference_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return None


def group_value(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return MISSING
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


__all__ = ["METRICS", "MetricSummary", "ScoreOptions", "ScoreSummary", "ScoredRow", "Scorer", "score_rows"]
