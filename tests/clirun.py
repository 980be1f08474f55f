"""Running the CLI in-process from tests."""

from __future__ import annotations

from pathlib import Path

from omnirun import cli


def omnirun(root: Path, *args: str) -> int:
    """`python -m omnirun output.root=<root> task.progress=false <args>`, in-process; returns the exit status."""
    try:
        cli.main([f"output.root={root}", "task.progress=false", *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def only_run_dir(root: Path) -> Path:
    """The single run directory under `root` (fails if there are none or several)."""
    (run_dir,) = {p.parent for p in root.rglob("config.yaml")}
    return run_dir


def only_sweep_dir(root: Path) -> Path:
    """The single sweep directory under `root`/sweeps (fails if there are none or several)."""
    (sweep,) = list((root / "sweeps").iterdir())
    return sweep
