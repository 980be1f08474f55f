"""Versioned run directories and the files in them. Nothing is ever overwritten.

A run directory `<root>/<task>/<model>/<timestamp>/` holds config.yaml, overrides.yaml, command.txt,
outputs.jsonl (appended as results finish), metrics.json and manifest.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize(name: str) -> str:
    """A single safe path component: `/`, `..` and other specials become `_`, so it cannot escape its parent."""
    clean = _UNSAFE.sub("_", name).strip("._") or "_"
    return clean.replace("..", "_")


def new_run_dir(root: str | Path, task: str, model: str, now: datetime | None = None) -> Path:
    """Create and return a fresh `<root>/<task>/<model>/<timestamp>[-N]` directory (atomic, never reused)."""
    parent = Path(root) / sanitize(task) / sanitize(model)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(10_000):
        candidate = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a unique run directory under {parent}")


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temp file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class ResultWriter:
    """Appends one JSON line per finished record to outputs.jsonl. Rows are held until `flush()`, which
    writes them in one call and fsyncs, so a killed run leaves whole windows (plus at most one torn line,
    which resume drops)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._pending: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self._pending.append(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows.append(row)

    def flush(self) -> None:
        if self._pending:
            self._file.write("".join(self._pending))
            self._pending.clear()
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


def read_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was started with (its overrides.yaml, a YAML list of strings)."""
    import yaml

    path = run_dir / "overrides.yaml"
    if not path.exists():
        return []
    return [str(o) for o in yaml.safe_load(path.read_text()) or []]


def write_overrides(run_dir: Path, overrides: list[str]) -> None:
    (run_dir / "overrides.yaml").write_text("".join(f"- {json.dumps(o)}\n" for o in overrides) or "[]\n")


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
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def command_line() -> str:
    import shlex

    return redact(" ".join(shlex.quote(a) for a in [sys.executable, "-m", "omnirun", *sys.argv[1:]]))


_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")


def redact(text: str) -> str:
    """Hide hub tokens: the values of the token variables and anything shaped like `hf_...`."""
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return _TOKEN.sub("hf_***", text)
