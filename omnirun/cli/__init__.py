"""The command line: `python -m omnirun` (single runs, sweeps, reruns)."""

from omnirun.cli.main import main

__all__ = ["main"]
