"""Compare two benchmark runs (or two benchmark sweeps) metric by metric, with a noise-aware verdict.

    python -m omnirun.compare <baseline run or sweep dir> <candidate run or sweep dir> [--threshold 10]

For each metric: the ratio candidate / baseline and the change in percent (positive = worse, whatever the
metric's direction). A change within the runs' own spread (the larger stdev_pct of the two; at least 5%, and
25% for one-sample phases such as load_model) is "no change". The exit status is 1 when any metric got worse
beyond both its noise band and `--threshold` percent, so the command can gate a CI job.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omnirun import outputs

NOISE_FLOOR_PCT = 5.0
SINGLE_SAMPLE_NOISE_PCT = 25.0
LATENCIES = ("load_model", "first_generate", "prefill", "decode", "per_token", "generate")
THROUGHPUTS = {
    "prefill_tokens_per_s": "prefill",
    "decode_tokens_per_s": "decode",
    "tokens_per_s": "generate",
    "samples_per_s": "generate",
}


@dataclass
class Row:
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


def load(path: Path) -> dict[str, dict[str, Any]]:
    """{job label: benchmark.json} for a run directory (one job) or a sweep directory (one per job)."""
    if (path / "benchmark.json").is_file():
        return {"run": json.loads((path / "benchmark.json").read_text())}
    jobs = {}
    for job in sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        if (job / "benchmark.json").is_file():
            label = " ".join(outputs.read_overrides(job)) or job.name
            jobs[label] = json.loads((job / "benchmark.json").read_text())
    if not jobs:
        raise SystemExit(f"error: {path} holds no benchmark.json (a task=benchmark run or sweep directory)")
    return jobs


def compare_reports(base: dict[str, Any], cand: dict[str, Any], threshold_pct: float, job: str = "run") -> list[Row]:
    rows = []
    for phase in LATENCIES:
        b, c = base["phases"][phase], cand["phases"][phase]
        if b["count"] and c["count"]:
            rows.append(row(job, f"{phase}.mean_s", b["mean"], c["mean"], noise(b, c), threshold_pct, lower=True))
    for metric, phase in THROUGHPUTS.items():
        b, c = base["phases"][phase].get(metric), cand["phases"][phase].get(metric)
        if b and c:
            n = noise(base["phases"][phase], cand["phases"][phase])
            rows.append(row(job, metric, b, c, n, threshold_pct, lower=False))
    b_mem, c_mem = base["memory"].get("generate", {}), cand["memory"].get("generate", {})
    if b_mem.get("max_rss_mb") and c_mem.get("max_rss_mb"):
        rows.append(
            row(
                job,
                "generate.max_rss_mb",
                b_mem["max_rss_mb"],
                c_mem["max_rss_mb"],
                NOISE_FLOOR_PCT,
                threshold_pct,
                True,
            )
        )
    return rows


def noise(b: dict[str, float], c: dict[str, float]) -> float:
    if min(b["count"], c["count"]) < 2:
        return SINGLE_SAMPLE_NOISE_PCT
    return max(b["stdev_pct"], c["stdev_pct"], NOISE_FLOOR_PCT)


def row(job: str, metric: str, b: float, c: float, noise_pct: float, threshold_pct: float, lower: bool) -> Row:
    ratio = c / b
    change = (ratio - 1) * 100 if lower else (1 / ratio - 1) * 100  # positive = worse
    verdict = "no change" if abs(change) <= noise_pct else ("worse" if change > 0 else "better")
    return Row(job, metric, b, c, ratio, change, noise_pct, verdict, verdict == "worse" and change > threshold_pct)


def compare(baseline: Path, candidate: Path, threshold_pct: float = 10.0) -> list[Row]:
    base, cand = load(baseline), load(candidate)
    common = [job for job in base if job in cand]
    if not common:
        raise SystemExit(f"error: no job of {candidate} matches one of {baseline} (compare runs of the same sweep)")
    return [r for job in common for r in compare_reports(base[job], cand[job], threshold_pct, job)]


def table(rows: list[Row]) -> str:
    lines = [
        "| job | metric | baseline | candidate | ratio | change | noise | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flag = " (REGRESSION)" if r.regression else ""
        lines.append(
            f"| {r.job} | {r.metric} | {r.baseline:.4g} | {r.candidate:.4g} | {r.ratio:.3f} | "
            f"{r.change_pct:+.1f}% | ±{r.noise_pct:.1f}% | {r.verdict}{flag} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnirun.compare", description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--threshold", type=float, default=10.0, help="percent worse that fails (default 10)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = compare(args.baseline, args.candidate, args.threshold)
    print(table(rows))
    regressions = [r for r in rows if r.regression]
    counts = {v: sum(r.verdict == v for r in rows) for v in ("worse", "better")}
    if regressions:
        summary = f"REGRESSION in {len(regressions)} metric(s)"
    elif not counts["worse"] and not counts["better"]:
        summary = "no change"
    else:
        summary = f"no regression beyond the threshold ({counts['better']} better, {counts['worse']} worse)"
    print(f"\nverdict: {summary} (threshold {args.threshold:g}%)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
