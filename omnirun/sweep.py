"""The sweep summary: after a multirun, one row per job in `summary.csv` and `summary.md` at the sweep root."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from omnirun import rundir
from omnirun.results.schema import to_jsonable
from omnirun.secrets import redact, redact_yaml

HEADLINE = (
    "status",
    "num_samples",
    "num_errors",
    "output_tokens",
    "output_tokens_per_s",
    "load_model_s",
    "total_s",
)


failed_jobs: list[str] = []
"""The jobs of the last sweep that did not complete (the CLI exits non-zero when there are any)."""


class SweepSummary(Callback):
    """Hydra callback (named in conf/config.yaml) that writes the summary when every job has ended."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        """Hydra saves multirun.yaml just before the first job starts: redact it as soon as it exists."""
        redact_file(Path(config.hydra.sweep.dir) / rundir.MULTIRUN_YAML)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        redact_file(Path(config.hydra.sweep.dir) / rundir.MULTIRUN_YAML)
        write_summary(Path(config.hydra.sweep.dir))


"""What Hydra saves at the sweep root: the sweep's config and overrides (secrets redacted by omnirun)."""


def redact_file(path: Path) -> None:
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        clean = redact_yaml(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One summary row per job: its overrides, status, headline metrics and error."""
    rows = []
    for job in rundir.sweep_jobs(sweep_dir):
        metrics = job.read_metrics()
        row: dict[str, Any] = {"job": job.name, "overrides": redact(" ".join(job.read_overrides()))}
        if metrics is None:
            row["status"] = "missing"
            rows.append(row)
            continue
        row.update({k: to_jsonable(getattr(metrics, k)) for k in HEADLINE})
        row["ttft_ms_p50"] = metrics.ttft_ms.p50 if metrics.ttft_ms else None
        row["e2e_ms_p50"] = metrics.e2e_ms.p50 if metrics.e2e_ms else None
        row["max_rss_mb"] = metrics.memory.max_rss_mb
        if metrics.benchmark is not None:
            row.update(to_jsonable(metrics.benchmark))
        row.update(score_columns(metrics.scores))
        row["error"] = redact(metrics.error) if metrics.error else None
        rows.append(row)
    return rows


def score_columns(scores: dict[str, Any] | None) -> dict[str, Any]:
    """`score_<metric>` (the mean, or the corpus score) and `score_<metric>_stderr` for each metric a job scored
    (`task.score` or task=score), so a sweep shows quality beside speed."""
    out: dict[str, Any] = {}
    for name, summary in ((scores or {}).get("scores") or {}).items():
        out[f"score_{name}"] = summary.get("mean")
        out[f"score_{name}_stderr"] = summary.get("stderr")
    return out


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = job_rows(sweep_dir)
    if not rows:
        return rows
    columns = list(dict.fromkeys(k for r in rows for k in r))  # failed jobs may lack benchmark columns
    rows = [{c: r.get(c) for c in columns} for r in rows]
    with (sweep_dir / rundir.SUMMARY_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    (sweep_dir / rundir.SUMMARY_MD).write_text("\n".join(lines) + "\n")
    failed_jobs[:] = [str(r["job"]) for r in rows if r["status"] != "completed"]
    print(f"sweep: {len(rows)} jobs, {len(failed_jobs)} failed; summary: {sweep_dir / rundir.SUMMARY_MD}")
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")
