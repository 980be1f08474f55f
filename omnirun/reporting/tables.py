"""Markdown: report.md of a set of runs, compare.md of two, and what the comparison tool prints."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from omnirun.reporting.compare import Ratio, Result, Row
from omnirun.reporting.load import METRICS
from omnirun.reporting.outputs import DEFINITIONS, OutputComparison
from omnirun.reporting.values import cell, fmt, pct, show, unique

TOKENS_NOTE = f"Tokens: {DEFINITIONS['tokens']}. Token agreement: {DEFINITIONS['agreement']}. " + (
    f"Prefix agreement: {DEFINITIONS['prefix']}."
)


# --------------------------------------------------------------------------------------------- report.md
def report_markdown(frame: pd.DataFrame, swept: Sequence[str], path: Path, images: Iterable[str] = ()) -> str:
    """report.md: the notes (what varied, the best configuration), the table, failed runs, the plots."""
    done = frame[frame["status"] == "completed"]
    failed = frame[frame["status"] != "completed"]
    lines = [
        f"# omnirun report: {path.name}",
        "",
        f"- {len(frame)} run(s) under `{path}`: {len(done)} completed, {len(failed)} not completed.",
        f"- {context(frame)}",
    ]
    if swept:
        values = "; ".join(f"`{k}` = {', '.join(show(v) for v in unique(frame[k]))}" for k in swept)
        lines.append(f"- Varied: {values}.")
    else:
        lines.append("- Nothing varied between the runs' overrides.")
    for column, word in (("output_tokens_per_s", "Best throughput"), ("decode_tokens_per_s", "Best decode rate")):
        if column in done and done[column].notna().any():
            best = done.loc[done[column].idxmax()]
            where = ", ".join(f"{k}={show(best[k])}" for k in swept) or "the only configuration"
            lines.append(f"- {word}: **{fmt(best[column])} tokens/s** with {where} (run `{best['run']}`).")
    if "e2e_ms_p50" in done and done["e2e_ms_p50"].notna().any():
        best = done.loc[done["e2e_ms_p50"].idxmin()]
        where = ", ".join(f"{k}={show(best[k])}" for k in swept) or "the only configuration"
        lines.append(f"- Lowest end-to-end latency (p50): **{fmt(best['e2e_ms_p50'])} ms** with {where}.")
    if "unstable" in frame and frame["unstable"].eq(True).any():
        flagged = frame.loc[frame["unstable"].eq(True), "run"]
        which = "all" if len(flagged) == frame["unstable"].notna().sum() else ", ".join(f"`{r}`" for r in flagged)
        lines.append(
            f"- Benchmark runs flagged unstable (a large spread or a busy machine; see their benchmark.md): {which}."
        )
    metrics = [m for m in METRICS if m.column in frame and frame[m.column].notna().any()]
    header = ["run", "status", *swept, *(m.short for m in metrics)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        cells = [row["run"], row["status"], *(show(row[k]) for k in swept), *(fmt(row[m.column]) for m in metrics)]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    if len(failed):
        lines += ["", "## Runs that did not complete", ""]
        for _, row in failed.iterrows():
            where = f" ({row['overrides']})" if row["overrides"] else ""
            error = row["error"] if isinstance(row["error"], str) else "no error recorded"
            lines.append(f"- `{row['run']}`{where}: {row['status']}: {error}")
    if images:
        lines += ["", "## Plots", "", *(f"![{Path(name).stem}]({name})" for name in images)]
    return "\n".join(lines) + "\n"


def context(frame: pd.DataFrame) -> str:
    """`model X · task Y · device Z` (plural with the values when the runs differ)."""
    parts = []
    for column, word in (("model", "model"), ("task", "task"), ("device", "device")):
        values = [str(v) for v in unique(frame[column]) if v is not None and pd.notna(v)] if column in frame else []
        if values:
            parts.append(f"{word} {values[0]}" if len(values) == 1 else f"{word}s {', '.join(values)}")
    return " · ".join(parts)


# -------------------------------------------------------------------------------------------- compare.md
def comparison_markdown(table: pd.DataFrame, result: Result, images: Iterable[str] = ()) -> str:
    """compare.md: one row per matched configuration, each cell `baseline → candidate (ratio×)`; then the
    benchmark verdict and the output comparison where the runs have them."""
    keys, baseline, candidate = result.matching.keys, result.baseline, result.candidate
    labels = list(dict.fromkeys(table["match"]))
    metrics = [m for m in METRICS if m.column in set(table["metric"])]
    throughput = table[(table["metric"] == "output_tokens_per_s") & table["ratio"].notna()]
    unmatched = table[(table["baseline_status"] == "absent") | (table["candidate_status"] == "absent")]
    lines = [
        f"# omnirun comparison: {candidate.name} vs {baseline.name}",
        "",
        f"- baseline: `{baseline}`; candidate: `{candidate}`.",
        f"- Matched by: {', '.join(f'`{k}`' for k in keys) or 'position (nothing was swept)'}; "
        f"{len(labels) - len(set(unmatched['match']))} of {len(labels)} configuration(s) on both sides.",
        "- Ratio = candidate / baseline: above 1 is better for throughputs, below 1 is better for latencies and "
        "memory.",
    ]
    if result.benchmark:
        lines.append(f"- Benchmark verdict (noise-aware, as `python -m omnirun.compare`): {benchmark_verdict(result)}.")
    if len(throughput):
        ratios = [r for r in throughput["ratio"] if r > 0]
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else math.nan
        lines.append(f"- Output throughput ratio, geometric mean over the matched configurations: **{geo:.2f}×**.")
    if len(unmatched):
        lines.append(f"- Present on one side only: {', '.join(f'`{m}`' for m in dict.fromkeys(unmatched['match']))}.")
    lines += ["", "| configuration | " + " | ".join(m.short for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for label in labels:
        part = table[table["match"] == label].set_index("metric")
        cells = []
        for m in metrics:
            r = part.loc[m.column]
            ratio = "" if pd.isna(r["ratio"]) else f" ({r['ratio']:.2f}×)"
            cells.append(f"{fmt(r['baseline'])} → {fmt(r['candidate'])}{ratio}")
        lines.append("| " + " | ".join(cell(c) for c in [label, *cells]) + " |")
    if result.outputs:
        lines += ["", "## Outputs", "", *outputs_section(result.outputs, worst=3)]
    if images:
        lines += ["", *(f"![{Path(name).stem}]({name})" for name in images)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- python -m omnirun.compare
def compare_markdown(result: Result, worst: int = 5) -> str:
    """What the comparison tool prints: the benchmark verdicts, the output comparison, what was left out,
    and the verdict line."""
    one_sided = result.matching.one_sided
    lines = [
        f"# omnirun compare: {result.candidate.name} vs {result.baseline.name}",
        "",
        f"- baseline: `{result.baseline}`; candidate: `{result.candidate}`",
        f"- matched by: {', '.join(f'`{k}`' for k in result.matching.keys) or 'position'}; "
        f"{len(result.matching.both)} configuration(s) on both sides",
    ]
    lines += [f"- only in the {'baseline' if p.candidate is None else 'candidate'}: `{p.label}`" for p in one_sided]
    lines += [f"- not compared: {why}" for why in result.skipped]
    if result.benchmark:
        lines += ["", "## Benchmark (ratio = candidate / baseline; change: positive = worse)", ""]
        lines += benchmark_table(result.benchmark)
    if result.outputs:
        lines += ["", "## Outputs", "", *outputs_section(result.outputs, worst, result.ratios)]
    lines += ["", f"verdict: {verdict(result)}"]
    return "\n".join(lines) + "\n"


def benchmark_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| job | metric | baseline | candidate | ratio | change | noise | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flag = " (REGRESSION)" if r.regression else ""
        lines.append(
            f"| {cell(r.job)} | {r.metric} | {r.baseline:.4g} | {r.candidate:.4g} | {r.ratio:.3f} | "
            f"{r.change_pct:+.1f}% | ±{r.noise_pct:.1f}% | {r.verdict}{flag} |"
        )
    return lines


def outputs_section(comparisons: Sequence[OutputComparison], worst: int, ratios: Sequence[Ratio] = ()) -> list[str]:
    """One row per compared pair of output runs, then the records that differ most, then the definitions."""
    speed = {r.match: r for r in ratios if r.metric == "output_tokens_per_s"}
    lines = [
        "| job | records | exact | exact match | token agreement | prefix agreement | errors b / c / both "
        "| only in b / c | output tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in comparisons:
        tp = speed.get(o.job)
        tps = f"{fmt(tp.baseline)} → {fmt(tp.candidate)}" + (f" ({tp.ratio:.2f}×)" if tp.ratio else "") if tp else "-"
        lines.append(
            f"| {cell(o.job)} | {len(o.records)} | {o.exact} | {pct(o.exact_rate)} | {pct(o.agreement)} | "
            f"{pct(o.prefix)} | {len(o.errors_baseline)} / {len(o.errors_candidate)} / {len(o.errors_both)} | "
            f"{len(o.only_baseline)} / {len(o.only_candidate)} | {tps} |"
        )
    differing = [(o.job, r) for o in comparisons for r in o.worst(worst)]
    differing = sorted(differing, key=lambda jr: (jr[1].agreement, jr[1].prefix))[:worst]
    if differing:
        lines += [
            "",
            f"Records that differ most (lowest token agreement, {len(differing)} shown):",
            "",
            "| job | id | token agreement | first difference (token) | baseline from there | candidate from there |",
            "|---|---|---|---|---|---|",
        ]
        for job, r in differing:
            where = "-" if r.first_difference is None else f"{r.first_difference} of {r.baseline_tokens}"
            lines.append(
                f"| {cell(job)} | {cell(r.id)} | {pct(r.agreement)} | {where} | {cell(r.baseline)} | "
                f"{cell(r.candidate)} |"
            )
    errors = [(o.job, o) for o in comparisons if o.errors_baseline or o.errors_candidate or o.errors_both]
    for job, o in errors:
        lines.append("")
        lines.append(
            f"Errors in `{job}` (not compared): baseline only {ids(o.errors_baseline)}; candidate only "
            f"{ids(o.errors_candidate)}; both {ids(o.errors_both)}."
        )
    lines += ["", TOKENS_NOTE]
    return lines


def ids(values: Sequence[str], limit: int = 10) -> str:
    if not values:
        return "none"
    shown = ", ".join(f"`{v}`" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def benchmark_verdict(result: Result) -> str:
    rows = result.benchmark
    regressions = [r for r in rows if r.regression]
    counts = {v: sum(r.verdict == v for r in rows) for v in ("worse", "better")}
    if regressions:
        return f"REGRESSION in {len(regressions)} metric(s) (threshold {result.threshold_pct:g}%)"
    if not counts["worse"] and not counts["better"]:
        return f"no change (threshold {result.threshold_pct:g}%)"
    return (
        f"no regression beyond the threshold ({counts['better']} better, {counts['worse']} worse; "
        f"threshold {result.threshold_pct:g}%)"
    )


def outputs_verdict(result: Result) -> str:
    compared = sum(len(o.records) for o in result.outputs)
    exact = sum(o.exact for o in result.outputs)
    text = f"{exact} of {compared} output(s) identical ({pct(exact / compared if compared else None)})"
    below = result.below_min_exact
    if result.min_exact is None:
        return text
    if below:
        jobs = ", ".join(f"`{o.job}` {pct(o.exact_rate)}" for o in below)
        return f"EXACT MATCH BELOW --min-exact {result.min_exact:g} in {len(below)} comparison(s): {jobs}"
    return f"{text}; --min-exact {result.min_exact:g} met"


def verdict(result: Result) -> str:
    """One line: the benchmark verdict and the outputs' exact-match summary, whichever apply."""
    parts = []
    if result.benchmark:
        parts.append(benchmark_verdict(result))
    if result.outputs:
        parts.append(outputs_verdict(result))
    return "; ".join(parts) or "nothing compared"
