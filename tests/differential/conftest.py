"""Fixtures of the differential tier: tiny models built once per session on first use, a CLI runner that
returns the rows, and texts of mixed lengths."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_heads import build_head

from differential import models

from clirun import omnirun, only_run_dir


class Zoo:
    """`zoo[kind]`: the folder of a tiny model (a `differential.models` kind or a `tiny_heads` one), built once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Path] = {}

    def __getitem__(self, kind: str) -> Path:
        if kind not in self.built:
            folder = self.root / kind
            self.built[kind] = models.build(kind, folder) if kind in models.KINDS else build_head(kind, folder)
        return Path(self.built[kind])


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    yield Zoo(tmp_path_factory.mktemp("zoo"))


def jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cli_rows(
    tmp_path: Path, model: Path, task: str, records: list[dict[str, Any]], *extra: str
) -> list[dict[str, Any]]:
    """One `python -m omnirun` run over `records`; its rows, in input order (the run must exit 0)."""
    root = tmp_path / f"out-{task}-{len(list(tmp_path.iterdir()))}"
    source = jsonl(tmp_path / f"in-{len(list(tmp_path.iterdir()))}.jsonl", records)
    assert omnirun(root, f"task={task}", f"model.name={model}", f"input.path={source}", *extra) == 0
    lines = (only_run_dir(root) / "outputs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def words(n: int, start: int = 0) -> str:
    """`n` words of the tiny corpus's vocabulary, deterministic."""
    from tiny_models import _WORDS

    return " ".join(_WORDS[(start + 7 * i) % len(_WORDS)] for i in range(n))


@contextlib.contextmanager
def api(folder: Path) -> Iterator[Any]:
    """A `TransformersEngine` on `folder`, unloaded at the end; each task method loads the head it needs."""
    from omnirun.engine import TransformersEngine

    engine = TransformersEngine(str(folder))
    try:
        yield engine
    finally:
        engine.unload_model()


DIFFERENCES: dict[str, dict[str, float]] = {}
"""The largest |omnirun - reference| seen per task and model kind in this session (scores, probabilities,
embedding components); printed at the end of the run."""


def note(task: str, kind: str, difference: float) -> float:
    """Note a difference between omnirun's answer and the reference's; returns it."""
    seen = DIFFERENCES.setdefault(task, {})
    seen[kind] = max(seen.get(kind, 0.0), float(difference))
    return float(difference)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not DIFFERENCES:
        return
    terminalreporter.section("largest difference from the reference, per task")
    for task, kinds in sorted(DIFFERENCES.items()):
        terminalreporter.write_line(f"{task}: " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(kinds.items())))
