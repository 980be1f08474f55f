"""The run directory: the one owner of its file names, its creation, resume checks and the manifest.

A run directory `<root>/<task>/<model>/<timestamp>/` holds config.yaml, overrides.yaml, command.txt,
outputs.jsonl (appended as results finish), metrics.json, manifest.json and omnirun.log; nothing in it is
ever overwritten except metrics.json, which a resumed run archives first (metrics.attempt-N.json). A process
writes it only while it holds its lock (`.omnirun.lock`, see `runlock`). Every JSON file in it is strict,
redacted UTF-8 JSON (`results.strict`); config.yaml stays YAML when a secret is taken out of it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from omnirun.errors import ConfigError
from omnirun.results import strict
from omnirun.results.schema import RunMetrics, to_jsonable
from omnirun.runlock import LOCK as LOCK
from omnirun.runlock import RunLock
from omnirun.secrets import redact, redact_yaml

CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
COMMAND = "command.txt"
OUTPUTS = "outputs.jsonl"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
LOG = "omnirun.log"
ERROR = "error.txt"
BENCHMARK_JSON = "benchmark.json"
BENCHMARK_MD = "benchmark.md"
CONVERSATION = "conversation.json"
EXPORT_JSON = "export.json"
BATCH_OUTPUT = "batch_output.jsonl"
DATASET = "dataset"
PARQUET = "outputs.parquet"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
EMBEDDINGS_NPY = "embeddings.npy"
MASKS = "masks"  # task=segment: the masks' PNG files (the rows name them)
IMAGES = "images"  # task=image: the pictures' PNG files
EXPORT_DIR = "export"  # task=export: where the model goes when export.path is not set
MULTIRUN_YAML = "multirun.yaml"  # a sweep directory: Hydra's record of the sweep (redacted by omnirun)
"""Folders of PNGs: task=segment's masks and task=image's pictures (`<record index>-<n>.png`)."""
ARTIFACTS = (METRICS, MANIFEST, CONFIG, BENCHMARK_JSON)
"""What a tracker uploads, when present."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize(name: str) -> str:
    """A single safe path component: `/`, `..` and other specials become `_`, so it cannot escape its parent."""
    clean = _UNSAFE.sub("_", name).strip("._") or "_"
    return clean.replace("..", "_")


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths of everything in it."""

    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def outputs(self) -> Path:
        return self.path / OUTPUTS

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def error(self) -> Path:
        return self.path / ERROR

    def shard(self, rank: int | None) -> Path:
        """outputs.jsonl, or a data-parallel rank's own outputs.rank<R>.jsonl."""
        return self.outputs if rank is None else self.path / f"outputs.rank{rank}.jsonl"

    def log(self, rank: int | None) -> Path:
        return self.path / (LOG if rank is None else f"omnirun.rank{rank}.log")

    def lock(self, purpose: str) -> RunLock:
        """Take this directory's lock for the life of the run; ConfigError with the holder's pid if taken."""
        return RunLock(self.path).acquire(purpose)

    def is_run(self) -> bool:
        return self.config.is_file()

    def started_by_omnirun(self) -> bool:
        """The files every run writes before anything else (`write_start`): config, overrides, command."""
        return all((self.path / name).is_file() for name in (CONFIG, OVERRIDES, COMMAND))

    # ----------------------------------------------------------------------------------------- writing
    def write_json(self, name: str, obj: Any) -> Path:
        return write_json(self.path / name, obj)

    def write_metrics(self, result: RunMetrics) -> None:
        write_json(self.metrics, result.to_json())

    def read_metrics(self) -> RunMetrics | None:
        return RunMetrics.load(self.metrics)

    def status(self) -> str | None:
        metrics = self.read_metrics()
        return None if metrics is None else str(metrics.status)

    def write_start(self, resolved_yaml: str, overrides: list[str]) -> None:
        """config.yaml, overrides.yaml and command.txt of a new run."""
        self.config.write_text(redact_yaml(resolved_yaml), encoding="utf-8")
        self.write_overrides(overrides)
        (self.path / COMMAND).write_text(command_line() + "\n")

    def append_command(self) -> None:
        with (self.path / COMMAND).open("a") as f:
            f.write(command_line() + "\n")

    def write_overrides(self, overrides: list[str]) -> None:
        """overrides.yaml: a YAML list of strings (JSON strings are valid YAML scalars)."""
        text = "".join(f"- {strict.dumps(o)}\n" for o in overrides) or "[]\n"
        (self.path / OVERRIDES).write_text(text, encoding="utf-8")

    def read_overrides(self) -> list[str]:
        """The overrides a run was started with: the one parser of overrides.yaml."""
        import yaml

        path = self.path / OVERRIDES
        if not path.exists():
            return []
        return [str(o) for o in yaml.safe_load(path.read_text(encoding="utf-8")) or []]

    def archive_metrics(self) -> None:
        """Keep an earlier attempt's metrics as metrics.attempt-N.json before a resumed run writes its own."""
        if self.metrics.exists():
            n = 1 + sum(1 for _ in self.path.glob("metrics.attempt-*.json"))
            self.metrics.rename(self.path / f"metrics.attempt-{n}.json")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest, {"omnirun_commit": git_commit(), "versions": versions(), **manifest})

    def record_failure(self, exc: BaseException, message: str) -> None:
        """error.txt with the traceback (redacted); metrics.json says failed or interrupted if none exists.
        When the run directory itself cannot be written (deleted, disk full) this says so on stderr and
        returns: the failure being recorded is what the user must see."""
        import traceback

        from omnirun.results.schema import Status

        status = Status.interrupted if isinstance(exc, KeyboardInterrupt) else Status.failed
        try:
            text = strict.clean_text(redact("".join(traceback.format_exception(exc))))
            self.error.write_text(text, encoding="utf-8")
            if not self.metrics.exists() or (self.read_metrics() or RunMetrics(Status.completed)).status != status:
                self.write_metrics(RunMetrics(status=status, error=redact(message)))
        except (OSError, ValueError) as write_error:
            print(f"warning: could not record the failure in {self}: {write_error}", file=sys.stderr)


def create(root: str | Path, task: str, model: str, now: datetime | None = None) -> RunDir:
    """A fresh `<root>/<task>/<model>/<timestamp>[-N]` directory (atomic, never reused)."""
    parent = Path(root).expanduser() / sanitize(task) / sanitize(model)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(10_000):
        candidate = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
            return RunDir(candidate)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a unique run directory under {parent}")


def find(resume: str, root: str, task: str, model: str) -> RunDir:
    """The directory named by `resume`: a path, or `latest` (the newest run of this task and model)."""
    if resume == "latest":
        parent = Path(root).expanduser() / sanitize(task) / sanitize(model)
        runs = [RunDir(p) for p in parent.glob("*") if RunDir(p).is_run()] if parent.is_dir() else []
        if not runs:
            raise ConfigError(f"resume=latest: no earlier run of task={task} model={model} in {parent}")
        return max(runs, key=lambda r: r.config.stat().st_mtime)
    run = RunDir(Path(resume).expanduser())
    if not run.is_run():
        raise ConfigError(f"resume={resume!r} is not a run directory (no {CONFIG} there); check the path")
    return run


def sweep_dir(resume: str, output_root: str) -> Path:
    """The sweep directory named by `resume` in a multirun: a path, or `latest` under <output.root>/sweeps."""
    if resume == "latest":
        sweeps = sorted((Path(output_root).expanduser() / "sweeps").glob("*"))
        if not sweeps:
            raise ConfigError(f"resume=latest: no earlier sweep in {Path(output_root) / 'sweeps'}")
        return sweeps[-1]
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ConfigError(f"resume={resume!r} is not a sweep directory; check the path")
    return path


def sweep_jobs(sweep: Path) -> list[RunDir]:
    """The job directories of a sweep, in job order."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()] if sweep.is_dir() else []
    return [RunDir(p) for p in sorted(jobs, key=lambda p: int(p.name))]


# ------------------------------------------------------------------------------------------------- resume
def config_hash(cfg: Any) -> str:
    """sha256 of what determines a run's outputs: the config without resume/debug/progress switches,
    without output.root (a moved output folder is the same job) and without `cluster` (a run started on a Ray
    cluster may be resumed on one machine, and the reverse: the rows are the same)."""
    from omnirun.config import OutputConfig

    same = replace(
        cfg,
        resume=None,
        resume_force=False,
        debug=False,
        task=replace(cfg.task, progress=True),
        output=OutputConfig(),
    )
    fields = to_jsonable(same)
    fields.pop("cluster", None)  # where the records run (cluster=local|ray) does not change a row
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def check_same_job(run: RunDir, config_sha: str, fingerprint: str | None, force: bool) -> None:
    """Refuse (ConfigError) when the config or the input differ from the interrupted run's, unless forced."""
    if not run.manifest.exists():
        return  # the run died before its manifest: nothing was generated, nothing to compare
    manifest = json.loads(run.manifest.read_text())
    problems = []
    if manifest.get("config_sha256") != config_sha:
        problems.append("the config differs")
    if manifest.get("input", {}).get("fingerprint") != fingerprint:
        problems.append("the input differs")
    if problems and not force:
        raise ConfigError(
            f"cannot resume {run}: {' and '.join(problems)} from the interrupted run's "
            "(rerun with the same config and input, or set resume_force=true)"
        )


def finished_ids(run: RunDir) -> Iterator[str]:
    """The ids of the complete lines of outputs.jsonl, in order, read a line at a time. A half-written last
    line (what a kill mid-write leaves) is cut off the file once the ids before it are read; a damaged line
    with good lines after it is never dropped silently: it stops the resume with the line's number."""
    path = run.outputs
    if not path.exists():
        return
    good_bytes, cut = 0, False
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            row_id = line_id(line) if line.endswith(b"\n") else None
            if row_id is None:
                following = sum(1 for _ in f)
                if following:
                    raise ConfigError(
                        f"cannot resume {run}: {OUTPUTS} line {number} is damaged and {following} lines "
                        "follow it; repair or delete that line, or start a new run"
                    )
                cut = True
                break
            good_bytes += len(line)
            yield row_id
    if cut:
        with path.open("r+b") as f:
            f.truncate(good_bytes)


def line_id(line: bytes) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return str(row["id"]) if isinstance(row, dict) and "id" in row else None


def finished_prefix(run: RunDir, expected_ids: Iterable[str], window: int = 1) -> int:
    """How many records are done, and keep exactly those in outputs.jsonl: the finished lines must be the first
    records of the input in order. With `window` > 1 (records are batched window by window, aligned to input
    positions), a partly written last window (Ctrl-C, a disk-full crash) is dropped back to its start, so that
    the resumed run forms the same batches, with the same seeds, as an uninterrupted run. Both outputs.jsonl
    and `expected_ids` are read one line / id at a time: memory holds at most a window of ids."""
    width = max(window, 1)
    expected = strict.as_written(expected_ids)  # ids as outputs.jsonl holds them
    recent: deque[str] = deque(maxlen=width)  # the last expected ids matched (the kept window's start is here)
    ahead: list[str] = []  # expected ids read past the matched ones
    tail: set[str] = set()  # distinct ids of finished lines after the first mismatch (bounded: > width fails)
    lines = matched = 0
    for row_id in finished_ids(run):  # read to the end: a damaged line further on must still stop the resume
        lines += 1
        if lines - 1 == matched and not ahead:
            want = next(expected, None)
            if want == row_id:
                matched += 1
                recent.append(row_id)
                continue
            if want is not None:
                ahead.append(want)
        if len(tail) <= width:
            tail.add(row_id)
    keep = matched - matched % window if window > 1 else matched
    if window > 1:
        before = list(recent)[len(recent) - (matched - keep) :] if matched > keep else []
        after = ahead + list(itertools.islice(expected, max(0, keep + window - matched - len(ahead))))
        window_ids = set(before + after[: keep + window - matched])
    else:
        window_ids = set()
    if tail and not tail <= window_ids:
        raise ConfigError(
            f"cannot resume {run}: its {OUTPUTS} does not match the first {lines} input records "
            "(the input changed?); start a new run"
        )
    if keep < lines:
        truncate_lines(run.outputs, keep)
    return keep


def truncate_lines(path: Path, keep: int) -> None:
    """Cut a file after its first `keep` lines."""
    with path.open("r+b") as f:
        size = 0
        for _ in range(keep):
            size += len(f.readline())
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def window_of(run: RunDir) -> int:
    """The batching window an earlier attempt recorded in its manifest (1 when it wrote none)."""
    if not run.manifest.exists():
        return 1
    return int(json.loads(run.manifest.read_text()).get("window") or 1)


# ------------------------------------------------------------------------------------------------ helpers
def write_json(path: Path, obj: Any) -> Path:
    """Write strict, redacted JSON (`results.strict`) atomically (a temp file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes((strict.dumps(to_jsonable(obj), indent=2) + "\n").encode("utf-8"))
    os.replace(tmp, path)
    return path


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("omnirun", "torch", "transformers", "accelerate", "bitsandbytes", "hydra-core", "datasets"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    """The commit of the omnirun checkout, when it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def command_line() -> str:
    """The command as typed, each argument redacted before it is quoted (so `***` is never a shell glob)."""
    return " ".join(shlex.quote(strict.clean_text(redact(a))) for a in [sys.executable, "-m", "omnirun", *sys.argv[1:]])
