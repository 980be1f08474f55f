"""`python -m omnirun` end to end on tiny local models: run directories, files, fields, sweeps and errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from omnirun import rundir


def test_run_dirs_are_unique_within_a_second(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5)
    first = rundir.create(tmp_path, "generate", "m", now=now)
    second = rundir.create(tmp_path, "generate", "m", now=now)
    assert first != second and first.path.exists() and second.path.exists()


@pytest.mark.parametrize("name", ["../../etc", "org/model", "..", "a/../../b", "/abs/path"])
def test_model_names_cannot_escape_the_output_root(tmp_path: Path, name: str) -> None:
    run_dir = rundir.create(tmp_path / "root", "generate", name).path
    assert (tmp_path / "root").resolve() in run_dir.resolve().parents
    assert run_dir.parent.parent.name == "generate"


def test_overrides_round_trip_with_quotes_and_unicode(tmp_path: Path) -> None:
    overrides = ['input.prompt="Name three rivers."', "input.template='Q: {q}'", "input.prompt=Ünïcode ✓"]
    rundir.RunDir(tmp_path).write_overrides(overrides)
    assert rundir.RunDir(tmp_path).read_overrides() == overrides
