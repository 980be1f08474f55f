"""Resuming an interrupted run: find its directory, check it is the same job, keep its finished records.

outputs.jsonl is always a prefix of the input in input order (results are written window by window, in
order, and fsynced), so resuming means: drop a half-written last line, check that the finished lines are the
first N records, and run the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from omnirun import outputs
from omnirun.config import OutputConfig, RunConfig
from omnirun.errors import ConfigError
from omnirun.inputs import Record

RUN_MARKER = "manifest.json"


@dataclass
class Resumed:
    run_dir: Path
    done: int
    """Records already finished (complete lines kept in outputs.jsonl)."""
    dropped_bytes: int
    """Bytes of a half-written last line that were cut off."""


def config_hash(cfg: RunConfig) -> str:
    """sha256 of what determines a run's outputs: the config without resume/debug/progress switches and
    without output.root (a moved output folder is the same job)."""
    same = replace(
        cfg,
        resume=None,
        resume_force=False,
        debug=False,
        task=replace(cfg.task, progress=True),
        output=OutputConfig(),
    )
    return hashlib.sha256(json.dumps(asdict(same), sort_keys=True, default=str).encode()).hexdigest()


def find_run_dir(cfg: RunConfig) -> Path:
    """The directory named by `resume`: a path, or `latest` (newest run of this task and model)."""
    assert cfg.resume is not None
    if cfg.resume == "latest":
        parent = Path(cfg.output.root) / outputs.sanitize(str(cfg.task.name)) / outputs.sanitize(cfg.model.name)
        runs = sorted(p for p in parent.glob("*") if (p / "config.yaml").exists()) if parent.is_dir() else []
        if not runs:
            raise ConfigError(
                f"resume=latest: no earlier run of task={cfg.task.name} model={cfg.model.name} in {parent}"
            )
        return max(runs, key=lambda p: p.stat().st_mtime)
    path = Path(cfg.resume).expanduser()
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"resume={cfg.resume!r} is not a run directory (no config.yaml there); check the path")
    return path


def sweep_dir(resume: str, output_root: str) -> Path:
    """The sweep directory named by `resume` in a multirun: a path, or `latest` under <output.root>/sweeps."""
    if resume == "latest":
        sweeps = sorted((Path(output_root) / "sweeps").glob("*"))
        if not sweeps:
            raise ConfigError(f"resume=latest: no earlier sweep in {Path(output_root) / 'sweeps'}")
        return sweeps[-1]
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ConfigError(f"resume={resume!r} is not a sweep directory; check the path")
    return path


def check_same_job(run_dir: Path, config_sha: str, fingerprint: str | None, force: bool) -> None:
    """Refuse (ConfigError) when the config or the input differ from the interrupted run's, unless forced."""
    manifest_file = run_dir / RUN_MARKER
    if not manifest_file.exists():
        return  # the run died before its manifest: nothing was generated, nothing to compare
    manifest = json.loads(manifest_file.read_text())
    problems = []
    if manifest.get("config_sha256") != config_sha:
        problems.append("the config differs")
    if manifest.get("input", {}).get("fingerprint") != fingerprint:
        problems.append("the input differs")
    if problems and not force:
        raise ConfigError(
            f"cannot resume {run_dir}: {' and '.join(problems)} from the interrupted run's "
            "(rerun with the same config and input, or set resume_force=true)"
        )


def finished_prefix(run_dir: Path, records: list[Record]) -> Resumed:
    """Keep the complete lines of outputs.jsonl (cut a half-written last line) and check they are the first
    records of the input, in order."""
    path = run_dir / "outputs.jsonl"
    if not path.exists():
        return Resumed(run_dir, 0, 0)
    data = path.read_bytes()
    good_bytes, ids = 0, []
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict) or "id" not in row:
            break
        ids.append(str(row["id"]))
        good_bytes += len(line)
    dropped = len(data) - good_bytes
    if dropped:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    expected = [r.id for r in records[: len(ids)]]
    if ids != expected:
        raise ConfigError(
            f"cannot resume {run_dir}: its outputs.jsonl does not match the first {len(ids)} input records "
            "(the input changed?); start a new run"
        )
    return Resumed(run_dir, len(ids), dropped)
