"""The GPU check's result files: `gpu-<card>.json` and `.md` from the stage files `gpu_check.sh` leaves in its
output folder (`tests.xml` from `pytest -m gpu`, `cli.json` from `gpu_cli.py`, `bench.json` from
`gpu_bench.py`), each target with its measured figure, and a shape check of both files.

Targets (issue 27; a benchmark, not a timed test):
- `decode_vs_plain`: omnirun's automatic choice decodes at bs=1 at least 4x plain `generate` (ratio, same run);
- `offline_tok_s`: omnirun's batching gives at least 10,000 output tok/s over the 256 prompts (0.5B model);
- `gpu_tests`: the share of the `gpu` tests that ran and passed: 1.0 wanted, and at least one must run;
- `cuda_memory_agreement`: |the `hardware=auto` run's `memory.max_cuda_allocated_mb` - the child process's own
  `torch.cuda.max_memory_allocated`| / the latter, at most 0.10 (the dry run compares max_rss_mb with VmHWM).

    python benchmarks/gpu_report.py --out DIR --card NAME [--dry-run]

Exits 1, naming each problem, when a result file lacks what a target or a contender row needs.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import CONTENDERS

TARGETS = {
    "decode_vs_plain": (">=", 4.0, "bs=1 decode tok/s, omnirun's automatic choice / plain generate"),
    "offline_tok_s": (">=", 10000.0, "output tok/s over the mixed-length prompts, omnirun's batching"),
    "gpu_tests": (">=", 1.0, "passed / run among the tests marked gpu (none run: 0)"),
    "cuda_memory_agreement": ("<=", 0.10, "|reported peak - independent peak| / independent peak, hardware=auto"),
}
"""Each target: comparison, wanted value, what is measured."""
SECTIONS = {"decode": "bs=1 decode", "throughput": "Offline throughput"}


def junit(path: Path) -> dict[str, Any]:
    """Counts of a pytest junit XML file, and the names of the tests that failed."""
    if not path.is_file():
        return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "missing": f"{path.name} was not written"}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None, f"{path}: no testsuite element"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"passed": passed, "failed": counts["failures"], "errors": counts["errors"],
            "skipped": counts["skipped"], "failures": failed}  # fmt: skip


def read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {"missing": f"{path.name} was not written"}


def targets(bench: dict[str, Any], cli: dict[str, Any], tests: dict[str, Any]) -> dict[str, Any]:
    ran = tests["passed"] + tests["failed"] + tests["errors"]
    auto = cli.get("runs", {}).get("auto", {})
    reported = auto.get("max_cuda_allocated_mb")
    if reported is None and bench.get("settings", {}).get("dry_run"):
        reported = auto.get("max_rss_mb")
    independent = auto.get("independent_peak_mb")
    measured = {
        "decode_vs_plain": bench.get("decode", {}).get("omnirun", {}).get("ratio_to_plain"),
        "offline_tok_s": bench.get("throughput", {}).get("omnirun", {}).get("tok_s"),
        "gpu_tests": tests["passed"] / ran if ran else 0.0,
        "cuda_memory_agreement": abs(reported - independent) / independent if reported and independent else None,
    }
    out = {}
    for key, (op, wanted, what) in TARGETS.items():
        value = measured[key]
        met = value is not None and (value >= wanted if op == ">=" else value <= wanted)
        out[key] = {"measured": value, "wanted": f"{op} {wanted:g}", "met": met and (key != "gpu_tests" or ran > 0),
                    "what": what}  # fmt: skip
    return out


def build(out: Path, card: str, dry_run: bool) -> dict[str, Any]:
    bench, cli, tests = read(out / "bench.json"), read(out / "cli.json"), junit(out / "tests.xml")
    return {
        "card": card,
        "dry_run": dry_run,
        "targets": targets(bench, cli, tests),
        "tests": tests,
        "cli": cli,
        "bench": bench,
        "definitions": {
            "decode tok/s": "(new tokens - 1) / (end-to-end - time to first token), one prompt, median of repeats",
            "throughput tok/s": "output tokens of all prompts / wall time of the whole set, prefill included",
            "ratio_to_plain": "tok/s / the plain contender's tok/s of the same workload in the same run",
            "vs_limit": "tok/s / (measured copy bandwidth / bytes of weights); batched rows can exceed 1",
            "bandwidth": "device-to-device copy: (bytes read + bytes written) / s, CUDA events, median of 10",
        },
    }


def num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(report: dict[str, Any]) -> str:
    bench, lines = (
        report["bench"],
        [f"# GPU check: {report['card']}{' (dry run on the CPU)' if report['dry_run'] else ''}"],
    )
    band, limit, weights = bench.get("bandwidth", {}), bench.get("limit_tok_s"), bench.get("weight_bytes") or 0
    lines += [
        "",
        f"machine: {json.dumps(bench.get('machine'))}; load average before {bench.get('loadavg_before')}, "
        f"after {bench.get('loadavg_after')}",
        "",
        f"bandwidth {num(band.get('gb_s'))} GB/s; weights {num(weights / 2**20)} MiB; bs=1 limit {num(limit)} tok/s",
    ]
    lines += ["", "## Targets", "", "| target | measured | wanted | met |", "|---|---|---|---|"]
    for key, t in report["targets"].items():
        lines.append(f"| {key} | {num(t['measured'], 3)} | {t['wanted']} | {'yes' if t['met'] else 'no'} |")
    settings = bench.get("settings", {})
    for workload, title in SECTIONS.items():
        size = (
            f", {settings.get('prompts')} prompts x {settings.get('batch_tokens')} tokens"
            if workload != "decode"
            else ""
        )
        lines += [
            "",
            f"## {title}{size}",
            "",
            "| contender | tok/s | x plain | x bandwidth limit |",
            "|---|---|---|---|",
        ]
        for name in CONTENDERS[workload]:
            row = bench.get(workload, {}).get(name, {"skipped": "not measured"})
            if "skipped" in row:
                lines.append(f"| {name} | skipped: {row['skipped'].splitlines()[-1][:200]} | | |")
            else:
                lines.append(
                    f"| {name} | {num(row['tok_s'])} | {num(row['ratio_to_plain'], 2)} | {num(row['vs_limit'], 3)} |"
                )
    lines += ["", "## CLI runs", "", "| run | exit | status | plan | placed on | output tok/s | reported peak MB | "
              "independent peak MB |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, run in report["cli"].get("runs", {}).items():
        plan = run.get("plan") or {}
        shown = ", ".join(f"{k}={v}" for k, v in plan.items() if v is not None)
        peak = run.get("max_cuda_allocated_mb") or run.get("max_rss_mb")
        lines.append(f"| {name} | {run.get('exit_code')} | {run.get('status')} | {shown} | "
                     f"{', '.join(run.get('placed_on', []))} | {num(run.get('output_tokens_per_s'))} | {num(peak)} | "
                     f"{num(run.get('independent_peak_mb'))} |")  # fmt: skip
    t = report["tests"]
    failing = f"; failing: {', '.join(t['failures'])}" if t.get("failures") else ""
    counts = f"passed {t['passed']}, failed {t['failed']}, errors {t['errors']}, skipped {t['skipped']}"
    lines += ["", "## Tests marked gpu", "", counts + failing]
    return "\n".join(lines) + "\n"


def problems(report: dict[str, Any], markdown: str) -> list[str]:
    """What the result files lack: a target's numbers, a contender's row or figures, a CLI run's exit code."""
    out = []
    for key in TARGETS:
        t = report["targets"].get(key, {})
        if not isinstance(t.get("measured"), (int, float)) or isinstance(t.get("measured"), bool):
            out.append(f"target {key}: measured is {t.get('measured')!r}, not a number")
    bench = report["bench"]
    for key in ("limit_tok_s", "weight_bytes"):
        if not isinstance(bench.get(key), (int, float)):
            out.append(f"bench.{key} is {bench.get(key)!r}, not a number")
    sections = {block.split("\n", 1)[0]: block for block in markdown.split("\n## ")}
    for workload, title in SECTIONS.items():
        block = next((b for head, b in sections.items() if head.startswith(title)), "")
        for name in CONTENDERS[workload]:
            row = bench.get(workload, {}).get(name, {})
            numbers = all(isinstance(row.get(k), (int, float)) for k in ("tok_s", "ratio_to_plain", "vs_limit"))
            if not numbers and not (name == "continuous" and isinstance(row.get("skipped"), str)):
                out.append(f"bench.{workload}.{name}: {row!r} lacks tok_s, ratio_to_plain and vs_limit")
            if f"\n| {name} |" not in block:
                out.append(f"the .md table '{title}' has no row for {name}")
    for name, run in report["cli"].get("runs", {"(none)": {}}).items():
        if not isinstance(run.get("exit_code"), int):
            out.append(f"cli run {name}: no exit code")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder holding the stage files")
    parser.add_argument("--card", required=True, help="the card's name, as in gpu-<card>.json")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    report = build(args.out, args.card, args.dry_run)
    markdown = table(report)
    (args.out / f"gpu-{args.card}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"gpu-{args.card}.md").write_text(markdown)
    print(markdown)
    found = problems(report, markdown)
    for problem in found:
        print(f"gpu_report: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
