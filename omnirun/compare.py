"""`python -m omnirun.compare <baseline> <candidate> [--threshold 10] [--min-exact X] [--json out.json]`.

Two benchmark runs (ratios against a noise band), two output runs (exact match and token agreement record by
record) or two sweeps job by job; exit status 1 on a regression beyond --threshold percent or an exact-match
rate below --min-exact. The code lives in `omnirun.reporting.compare` (see its docstring for the definitions);
this module is the command's entry point.
"""

import sys

from omnirun.reporting.cli import compare_main as main
from omnirun.reporting.compare import (
    NOISE_FLOOR_PCT,
    SINGLE_SAMPLE_NOISE_PCT,
    Result,
    Row,
    compare,
    compare_benchmarks,
    noise,
    row,
)

__all__ = [
    "NOISE_FLOOR_PCT",
    "SINGLE_SAMPLE_NOISE_PCT",
    "Result",
    "Row",
    "compare",
    "compare_benchmarks",
    "main",
    "noise",
    "row",
]

if __name__ == "__main__":
    sys.exit(main())
