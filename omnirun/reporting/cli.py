"""The command lines: `python -m omnirun.report` (also `python -m omnirun.reporting`) and
`python -m omnirun.compare`. Errors about the paths are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnirun import rundir
from omnirun.reporting.compare import compare
from omnirun.reporting.load import ReportError
from omnirun.reporting.report import build_report, compare_runs
from omnirun.reporting.tables import compare_markdown


def main(argv: list[str] | None = None) -> None:
    """`python -m omnirun.report <dir> [<second dir>] [--out DIR] [--no-plots]`."""
    parser = argparse.ArgumentParser(
        prog="python -m omnirun.report",
        description="Tables and plots of omnirun runs and sweeps; with two directories, a comparison.",
    )
    parser.add_argument("path", help="a run directory, a sweep directory or any folder holding runs")
    parser.add_argument("candidate", nargs="?", help="a second run or sweep to compare against the first")
    parser.add_argument("--out", help="where to write (default: the directory, or the candidate's)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = parser.parse_args(argv)
    try:
        if args.candidate:
            comparison = compare_runs(args.path, args.candidate, args.out, plots=not args.no_plots)
            print(comparison.markdown)
            print(f"comparison: {comparison.files['compare.md']}")
        else:
            report = build_report(args.path, args.out, plots=not args.no_plots)
            print(report.markdown)
            print(f"report: {report.files['report.md']}")
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def compare_main(argv: list[str] | None = None) -> int:
    """`python -m omnirun.compare <baseline> <candidate> [--threshold 10] [--min-exact X] [--json PATH]`:
    prints the comparison; returns 1 on a regression or an exact-match rate below --min-exact, else 0."""
    parser = argparse.ArgumentParser(
        prog="python -m omnirun.compare",
        description="Compare two runs or two sweeps (job by job): benchmark runs metric by metric with a "
        "noise-aware verdict, output runs record by record (exact match, token agreement).",
    )
    parser.add_argument("baseline", type=Path, help="a run or sweep directory")
    parser.add_argument("candidate", type=Path, help="a run or sweep directory of the same kind")
    parser.add_argument("--threshold", type=float, default=10.0, help="benchmarks: percent worse that fails [10]")
    parser.add_argument("--min-exact", type=share, help="outputs: fail below this exact-match rate (0..1)")
    parser.add_argument("--worst", type=int, default=5, help="outputs: how many differing records to show [5]")
    parser.add_argument("--json", type=Path, help="also write the full result as JSON here")
    parser.add_argument(
        "--max-score-drop",
        type=share,
        help="score runs (task=score): fail when a score falls by more than this fraction of its scale (exact_match "
        "0..1, bleu 0..100: 0.02 allows 0.02 and 2 points) beyond the paired bootstrap's 95%% interval",
    )
    args = parser.parse_args(argv)
    if is_score_run(args.baseline) and is_score_run(args.candidate):
        return compare_score_runs(args.baseline, args.candidate, args.max_score_drop, args.json)
    try:
        result = compare(args.baseline, args.candidate, args.threshold, args.min_exact)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(compare_markdown(result, args.worst), end="")
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    return 1 if result.failed else 0


def is_score_run(path: Path) -> bool:
    """A task=score run directory: its metrics.json has `scores`."""
    metrics = path / rundir.METRICS
    return metrics.is_file() and bool(json.loads(metrics.read_text()).get("scores"))


def compare_score_runs(a: Path, b: Path, max_drop: float | None, out: Path | None) -> int:
    """Each score's difference B - A with a paired bootstrap 95% interval over the rows both scored; 1 when one
    fell by more than `max_drop` of its scale beyond that interval."""
    from omnirun.scoring import ScoredRow, compare_scores

    def rows(run: Path) -> list[ScoredRow]:
        lines = (run / rundir.OUTPUTS).read_text(encoding="utf-8").splitlines()
        return [ScoredRow.from_json(json.loads(line)) for line in lines if line.strip()]

    result = compare_scores(rows(a), rows(b), max_drop=max_drop)
    print("| metric | A | B | B - A | 95% interval | rows | allowed drop | dropped |")
    print("|---|---|---|---|---|---|---|---|")
    for diff in result.diffs:
        d = diff.to_json()
        allowed = "-" if d["allowed"] is None else f"{d['allowed']:.4g}"
        print(
            f"| {d['metric']} | {d['a']:.4g} | {d['b']:.4g} | {d['diff']:+.4g} | [{d['ci_low']:+.4g}, "
            f"{d['ci_high']:+.4g}] | {d['n']} | {allowed} | {'yes' if d['dropped'] else 'no'} |"
        )
    if result.only_a or result.only_b:
        print(f"\nnot compared: {result.only_a} rows scored in A only, {result.only_b} in B only")
    if out is not None:
        out.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    return 1 if result.failed else 0


def share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
