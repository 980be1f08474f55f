"""python -m omnirun.compare on output runs (record by record) and sweeps (job by job), and overrides as typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnirun import compare
from omnirun.reporting.outputs import compare_outputs, diff, tokens
from omnirun.results.schema import ResultRow


def test_token_agreement_definitions() -> None:
    assert tokens("Paris, France.\n Yes") == ["Paris", ",", "France", ".", "Yes"]
    same = diff("1", "The capital is Paris.", "The capital is Paris.")
    assert (same.exact, same.agreement, same.prefix, same.first_difference) == (True, 1.0, 1.0, None)
    spaced = diff("2", "The capital is Paris.", "The  capital is\nParis.")
    assert (spaced.exact, spaced.agreement, spaced.first_difference) == (False, 1.0, None)  # whitespace only
    parted = diff("3", "The capital is Paris .", "The capital was Paris .")
    assert parted.first_difference == 2 and parted.prefix == pytest.approx(2 / 5)
    assert parted.agreement == pytest.approx(2 * 4 / 10)  # The capital … Paris . shared
    assert parted.baseline.startswith("The capital is") and parted.candidate.startswith("The capital was")
    empty = diff("4", "", "something")
    assert (empty.agreement, empty.prefix, empty.first_difference) == (0.0, 0.0, 0)
    rows = [ResultRow("a", output="x"), ResultRow("b", error="bad")]
    both = compare_outputs(rows, [ResultRow("a", output="y"), ResultRow("b", error="bad")])
    assert both.errors_both == ["b"] and both.exact_rate == 0.0


def test_nothing_to_compare_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert compare.main([str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path), str(tmp_path), "--min-exact", "2"])  # not a share
