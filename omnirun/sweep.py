"""The sweep summary: after a multirun, one row per job in `summary.csv` and `summary.md` at the sweep root."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

HEADLINE = (
    "status",
    "num_samples",
    "num_errors",
    "output_tokens",
    "output_tokens_per_s",
    "load_model_s",
    "total_s",
)


class SweepSummary(Callback):
    """Hydra callback (named in conf/config.yaml) that writes the summary when every job has ended."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        write_summary(Path(config.hydra.sweep.dir))


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {"status": "missing"}
        overrides_file = job / "overrides.yaml"
        overrides = overrides_file.read_text().strip().splitlines() if overrides_file.exists() else []
        row: dict[str, Any] = {
            "job": job.name,
            "overrides": " ".join(o.lstrip("- ").strip('"') for o in overrides),
        }
        row.update({k: metrics.get(k) for k in HEADLINE})
        row["ttft_ms_p50"] = (metrics.get("ttft_ms") or {}).get("p50")
        row["e2e_ms_p50"] = (metrics.get("e2e_ms") or {}).get("p50")
        row["max_rss_mb"] = (metrics.get("memory") or {}).get("max_rss_mb")
        for key, value in (metrics.get("benchmark") or {}).items():
            row[key] = value
        row["error"] = metrics.get("error")
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = job_rows(sweep_dir)
    if not rows:
        return rows
    columns = list(dict.fromkeys(k for r in rows for k in r))  # failed jobs may lack benchmark columns
    rows = [{c: r.get(c) for c in columns} for r in rows]
    with (sweep_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    failed = sum(1 for r in rows if r["status"] != "completed")
    print(f"sweep: {len(rows)} jobs, {failed} failed; summary: {sweep_dir / 'summary.md'}")
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")
