"""The comparison tool: a baseline and a candidate (two runs, or two sweeps job by job), with a verdict.

    python -m omnirun.compare <baseline> <candidate> [--threshold 10] [--min-exact X] [--json out.json]

Runs are matched by the overrides that vary within either side (a sweep's swept keys); what is the same for
every job of a side, such as the dtype or backend under test, is not part of the match. When nothing varies
and both sides hold as many runs, they pair up in order. Each matched pair is then compared by what both runs
hold:
- benchmark.json (task=benchmark): per metric, the ratio candidate / baseline and the change in percent
  (positive = worse, whatever the metric's direction). A change within the runs' own spread (the larger
  stdev_pct of the two; at least 5%, and 25% for one-sample phases such as load_model) is "no change"; a metric
  worse beyond both that noise band and `--threshold` percent is a regression.
- outputs.jsonl (generate, batch, chat, stream): record by record, see `omnirun.reporting.outputs`; with
  `--min-exact X`, an exact-match rate below X (0..1) fails.
The headline metrics (throughput, latency, memory) of every pair are given as ratios too. The verdict fails
(the CLI exits 1) on any regression or exact-match rate below the minimum, so the command can gate a CI job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omnirun.reporting.load import METRICS, ReportError, Run, find_runs, headline, swept_keys
from omnirun.reporting.outputs import DEFINITIONS, OutputComparison, compare_outputs
from omnirun.reporting.values import show
from omnirun.results.benchmark import BenchmarkReport, Phase, PhaseStats

NOISE_FLOOR_PCT = 5.0
SINGLE_SAMPLE_NOISE_PCT = 25.0
THROUGHPUTS = {
    "prefill_tokens_per_s": Phase.prefill,
    "decode_tokens_per_s": Phase.decode,
    "tokens_per_s": Phase.generate,
    "samples_per_s": Phase.generate,
}
"""The benchmark throughputs compared, with the phase that holds each."""


# -------------------------------------------------------------------------------------------------- matching
@dataclass
class Pair:
    label: str
    """The matched configuration (`task.batch_size=2 generation.temperature=0.7`), or `run`, `#1`, ..."""
    baseline: Run | None
    candidate: Run | None


@dataclass
class Matching:
    keys: list[str]
    """The overrides the runs were matched by ([]: by position)."""
    pairs: list[Pair]

    @property
    def both(self) -> list[tuple[str, Run, Run]]:
        return [(p.label, p.baseline, p.candidate) for p in self.pairs if p.baseline and p.candidate]

    @property
    def one_sided(self) -> list[Pair]:
        return [p for p in self.pairs if p.baseline is None or p.candidate is None]


def match_runs(baseline: list[Run], candidate: list[Run]) -> Matching:
    """Pair the runs of two sides by their swept overrides (see the module docstring)."""
    keys = list(dict.fromkeys([*swept_keys(baseline), *swept_keys(candidate)]))
    base, cand = by_label(baseline, keys), by_label(candidate, keys)
    in_order = len(baseline) == len(candidate) and (len(baseline) == 1 or set(base) != set(cand))
    if not keys and in_order:  # nothing swept: pair in order (two single runs' folder names are chance)
        names = ["run"] if len(baseline) == 1 else [f"#{i + 1}" for i in range(len(baseline))]
        return Matching([], [Pair(n, b, c) for n, b, c in zip(names, baseline, candidate, strict=True)])
    labels = dict.fromkeys([*base, *cand])
    return Matching(keys, [Pair(label, base.get(label), cand.get(label)) for label in labels])


def by_label(runs: list[Run], keys: list[str]) -> dict[str, Run]:
    """`{"k1=v1 k2=v2": run}`; the same configuration twice keeps both, numbered."""
    out: dict[str, Run] = {}
    for run in runs:
        label = " ".join(f"{k}={show(run.param(k))}" for k in keys) or run.label
        n, unique = 1, label
        while unique in out:
            n += 1
            unique = f"{label} #{n}"
        out[unique] = run
    return out


# --------------------------------------------------------------------------------------- headline metrics
@dataclass
class Ratio:
    """One headline metric of one matched configuration."""

    match: str
    metric: str
    baseline: float | None
    candidate: float | None
    ratio: float | None
    """candidate / baseline; None when either is missing (or the baseline is 0)."""
    better: str
    """`higher` or `lower`."""
    baseline_run: str | None
    candidate_run: str | None
    baseline_status: str
    """The run's status, or `absent` when this side has no such configuration."""
    candidate_status: str


def metric_ratios(matching: Matching) -> list[Ratio]:
    """Every headline metric that some run has, for every matched configuration (completed runs only)."""
    runs = [r for p in matching.pairs for r in (p.baseline, p.candidate) if r is not None]
    heads = {id(r): headline(r) for r in runs}
    metrics = [m for m in METRICS if any(heads[id(r)].get(m.column) is not None for r in runs)]
    rows = []
    for pair in matching.pairs:
        b, c = pair.baseline, pair.candidate
        for metric in metrics:
            bv = heads[id(b)].get(metric.column) if b and b.status == "completed" else None
            cv = heads[id(c)].get(metric.column) if c and c.status == "completed" else None
            rows.append(
                Ratio(
                    match=pair.label,
                    metric=metric.column,
                    baseline=bv,
                    candidate=cv,
                    ratio=ratio(bv, cv),
                    better="higher" if metric.higher_is_better else "lower",
                    baseline_run=b.label if b else None,
                    candidate_run=c.label if c else None,
                    baseline_status=b.status if b else "absent",
                    candidate_status=c.status if c else "absent",
                )
            )
    return rows


def ratio(baseline: float | None, candidate: float | None) -> float | None:
    """candidate / baseline, None when either is missing or the baseline is 0."""
    return candidate / baseline if baseline and candidate is not None else None


# --------------------------------------------------------------------------------------------- benchmarks
@dataclass
class Row:
    """One benchmark metric of one matched configuration, with its noise-aware verdict."""

    job: str
    metric: str
    baseline: float
    candidate: float
    ratio: float
    change_pct: float
    """Positive means worse (slower, or less throughput, or more memory)."""
    noise_pct: float
    verdict: str
    """`no change`, `better` or `worse`."""
    regression: bool
    """Worse beyond both the noise band and the threshold."""


def compare_benchmarks(
    base: BenchmarkReport, cand: BenchmarkReport, threshold_pct: float, job: str = "run"
) -> list[Row]:
    """Phase means (lower is better), throughputs (higher is better) and the generate phase's peak RSS."""
    rows = []
    for phase in Phase:
        b, c = base.phases.get(phase), cand.phases.get(phase)
        if b and c and b.count and c.count:
            rows.append(row(job, f"{phase}.mean_s", b.mean, c.mean, noise(b, c), threshold_pct, lower=True))
    for metric, phase in THROUGHPUTS.items():
        b, c = base.phases.get(phase), cand.phases.get(phase)
        bv, cv = getattr(b, metric, None), getattr(c, metric, None)
        if b and c and bv and cv:
            rows.append(row(job, metric, bv, cv, noise(b, c), threshold_pct, lower=False))
    b_mem, c_mem = base.memory.get("generate"), cand.memory.get("generate")
    if b_mem and c_mem and b_mem.max_rss_mb and c_mem.max_rss_mb:
        rss = (b_mem.max_rss_mb, c_mem.max_rss_mb)
        rows.append(row(job, "generate.max_rss_mb", *rss, NOISE_FLOOR_PCT, threshold_pct, lower=True))
    return rows


def noise(b: PhaseStats, c: PhaseStats) -> float:
    """The noise band of a phase in percent: the larger spread of the two runs, at least NOISE_FLOOR_PCT;
    SINGLE_SAMPLE_NOISE_PCT when either run has one sample only."""
    if min(b.count, c.count) < 2:
        return SINGLE_SAMPLE_NOISE_PCT
    return max(b.stdev_pct, c.stdev_pct, NOISE_FLOOR_PCT)


def row(job: str, metric: str, b: float, c: float, noise_pct: float, threshold_pct: float, lower: bool) -> Row:
    """The verdict on one metric (`lower`: lower is better)."""
    r = c / b
    change = (r - 1) * 100 if lower else (1 / r - 1) * 100  # positive = worse
    verdict = "no change" if abs(change) <= noise_pct else ("worse" if change > 0 else "better")
    return Row(job, metric, b, c, r, change, noise_pct, verdict, verdict == "worse" and change > threshold_pct)


# ------------------------------------------------------------------------------------------------- the tool
@dataclass
class Result:
    """Everything `compare` found: benchmark verdicts, output comparisons, headline ratios, what was left out."""

    baseline: Path
    candidate: Path
    matching: Matching
    threshold_pct: float
    min_exact: float | None
    benchmark: list[Row] = field(default_factory=list)
    outputs: list[OutputComparison] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """`<configuration>: <why>` for each matched pair with nothing both runs hold."""

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.benchmark if r.regression]

    @property
    def below_min_exact(self) -> list[OutputComparison]:
        """Output comparisons under `min_exact` (also those with no record to compare)."""
        if self.min_exact is None:
            return []
        return [o for o in self.outputs if o.exact_rate is None or o.exact_rate < self.min_exact]

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.below_min_exact)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": str(self.baseline),
            "candidate": str(self.candidate),
            "matched_by": self.matching.keys or "position",
            "threshold_pct": self.threshold_pct,
            "min_exact": self.min_exact,
            "failed": self.failed,
            "benchmark": [asdict(r) for r in self.benchmark],
            "outputs": [o.to_json() for o in self.outputs],
            "metrics": [asdict(r) for r in self.ratios],
            "only_baseline": [p.label for p in self.matching.one_sided if p.candidate is None],
            "only_candidate": [p.label for p in self.matching.one_sided if p.baseline is None],
            "skipped": self.skipped,
            "definitions": {"outputs": DEFINITIONS},
        }


def compare(
    baseline: str | Path,
    candidate: str | Path,
    threshold_pct: float = 10.0,
    min_exact: float | None = None,
    *,
    require_match: bool = True,
) -> Result:
    """Compare two runs or two sweeps (see the module docstring). Raises ReportError when a side holds no run
    or (with `require_match`) no configuration is on both sides."""
    matching = match_runs(find_runs(baseline), find_runs(candidate))
    if require_match and not matching.both:
        raise ReportError(f"no run of {candidate} matches one of {baseline} (compare runs of the same sweep)")
    result = Result(Path(baseline), Path(candidate), matching, threshold_pct, min_exact)
    result.ratios = metric_ratios(matching)
    for label, b, c in matching.both:
        compared = False
        if b.benchmark is not None and c.benchmark is not None:
            result.benchmark += compare_benchmarks(b.benchmark, c.benchmark, threshold_pct, label)
            compared = True
        if b.outputs.is_file() and c.outputs.is_file():
            result.outputs.append(compare_outputs(b.rows(), c.rows(), label))
            compared = True
        if not compared:
            result.skipped.append(f"{label}: no benchmark.json or outputs.jsonl in both runs")
    return result
