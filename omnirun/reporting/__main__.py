"""`python -m omnirun.reporting ...`: the same as `python -m omnirun.report ...`."""

from omnirun.reporting.cli import main

main()
