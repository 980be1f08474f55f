"""The notebooks under notebooks/: committed without outputs, and each runs top to bottom without an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


NAMES = ("01_quickstart.ipynb", "02_sweep_analysis.ipynb")


KERNEL = "omnirun-test-python"


@pytest.fixture()
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec for this very interpreter in a temp Jupyter path (nothing installed for the user), the
    notebooks' fast settings, and one OpenMP thread (spinning threads crawl on a busy machine)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("OMNIRUN_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_without_errors(name: str, kernel_env: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(kernel_env)}}, allow_errors=False
    )
    client.execute()  # raises CellExecutionError naming the cell on the first error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    text = "".join(out.get("text", "") for out in outputs)
    if name == "01_quickstart.ipynb":
        assert "infer:" in text and "chat:" in text and "memory:" in text
    else:
        assert "swept: ['benchmark.batch_size']" in text
        assert any("image/png" in out.get("data", {}) for out in outputs)
