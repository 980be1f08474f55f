"""The notebooks under notebooks/: committed without outputs, and each runs top to bottom without an error."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


NAMES = ("01_quickstart.ipynb", "02_sweep_analysis.ipynb")


def test_committed_notebooks_are_valid_and_stripped() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} >= set(NAMES)
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"
            assert "attachments" not in cell, path.name
        assert "widgets" not in nb.metadata, path.name
