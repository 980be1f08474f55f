"""Memory and runner overhead as the input grows: does omnirun's memory stay flat from 10,000 to 1,000,000 records?

Each size runs `python -m omnirun task=generate` in a fresh process on a tiny random llama (built like the
tests' `tests/tiny_models.build_tiny("llama", ...)`), one new token per record (`generation.max_new_tokens=1
generation=greedy task.batch_size=64`), over a JSONL file generated on disk first. The table reports, from
`metrics.json`: peak RSS (`memory.max_rss_mb`), records/s (records / total_s), and the runner's own cost per
record, `(total_s - load_model_s - model_s) / records`, where `model_s` is the summed wall time of the
model's `generate` calls; plus the process's wall time (it also counts the input's first pass, which runs
before the run directory exists, and the interpreter's start). The model is tiny, so the model's time is
small and the runner's cost is what is measured.

    python benchmarks/input_scale.py [--sizes 10000 100000 1000000] [--out benchmarks/results/input_scale.json]

Targets: the largest run's peak RSS within 1.2x of the smallest's; runner cost under 0.2 ms per record.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_models import build_tiny  # noqa: E402

OVERRIDES = [
    "generation.max_new_tokens=1",
    "generation=greedy",
    "task.batch_size=64",
    "task.progress=false",
    "hardware.num_threads=1",  # the model is tiny: a second thread only spins (and the runner is single-threaded)
]
RSS_RATIO_TARGET = 1.2
RUNNER_MS_TARGET = 0.2


def write_input(path: Path, n: int) -> None:
    """`n` short, distinct prompts, one JSON object a line, written in blocks."""
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            f.write(
                "".join(
                    f'{{"id": "r{i}", "prompt": "record {i} says hello"}}\n'
                    for i in range(start, min(n, start + 10_000))
                )
            )


def run_size(model: Path, n: int, work: Path, timeout: float) -> dict[str, Any]:
    data = work / f"input-{n}.jsonl"
    write_input(data, n)
    out = work / f"out-{n}"
    command = [
        sys.executable, "-m", "omnirun", "task=generate", f"model.name={model}", f"input.path={data}",
        f"output.root={out}", *OVERRIDES,
    ]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=timeout, cwd=ROOT)
    wall_s = time.perf_counter() - began
    (run_dir,) = {p.parent for p in out.rglob("metrics.json")}
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["num_samples"] == n, f"{m['num_samples']} rows for {n} records"
    runner_s = m["total_s"] - (m["load_model_s"] or 0.0) - m["model_s"]
    data.unlink()
    (run_dir / "outputs.jsonl").unlink()  # a million rows take space; the metrics are what is kept
    return {
        "records": n,
        "max_rss_mb": round(m["memory"]["max_rss_mb"], 1),
        "records_per_s": round(n / m["total_s"], 1),
        "runner_ms_per_record": round(runner_s / n * 1000, 4),
        "model_ms_per_record": round(m["model_s"] / n * 1000, 4),
        "total_s": round(m["total_s"], 2),
        "load_model_s": round(m["load_model_s"] or 0.0, 2),
        "model_s": round(m["model_s"], 2),
        "process_wall_s": round(wall_s, 2),
        "num_errors": m["num_errors"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = "| records | peak RSS MB | records/s | runner ms/record | model ms/record | total s | process wall s |"
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['records']:,} | {r['max_rss_mb']:,.1f} | {r['records_per_s']:,.0f} "
            f"| {r['runner_ms_per_record']:.4f} | {r['model_ms_per_record']:.4f} "
            f"| {r['total_s']:,.1f} | {r['process_wall_s']:,.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "input_scale.json")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one size may take")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny("llama", work / "tiny-llama")
        for n in sorted(args.sizes):
            try:
                rows.append(run_size(model, n, work, args.timeout))
            except subprocess.TimeoutExpired:
                print(f"{n:,} records: over --timeout={args.timeout:.0f} s, not reported", file=sys.stderr)
                break
            print(table(rows[-1:]).split("\n")[-1], flush=True)
    ratio = rows[-1]["max_rss_mb"] / rows[0]["max_rss_mb"] if rows else None
    worst = max((r["runner_ms_per_record"] for r in rows), default=None)
    targets = {
        "rss_ratio_largest_to_smallest": None if ratio is None else round(ratio, 3),
        "rss_ratio_target": RSS_RATIO_TARGET,
        "rss_met": ratio is not None and ratio <= RSS_RATIO_TARGET,
        "runner_ms_per_record_worst": worst,
        "runner_ms_target": RUNNER_MS_TARGET,
        "runner_met": worst is not None and worst < RUNNER_MS_TARGET,
    }
    print()
    print(table(rows))
    print(json.dumps(targets))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    report: dict[str, Any] = {"machine": machine}
    report |= {"overrides": OVERRIDES, "rows": rows, "targets": targets}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
