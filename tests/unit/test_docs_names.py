"""Every dotted `omnirun.*` name the READMEs mention exists: docs cannot drift from the code again."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "examples" / "omnirun-echo" / "pyproject.toml"]
NAME = re.compile(r"`(omnirun(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
NOT_PYTHON = {
    "omnirun.log": "a file in the run directory",
    "omnirun.backends": "an entry-point group (omnirun.plugins.BACKENDS_GROUP)",
}


def mentioned() -> list[str]:
    return sorted({m for doc in DOCS if doc.exists() for m in NAME.findall(doc.read_text())} - set(NOT_PYTHON))


def resolve(dotted: str) -> object:
    """The module or attribute `dotted` names (the longest importable module prefix, then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr)
        return found
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", mentioned())
def test_every_name_in_the_docs_exists(dotted: str) -> None:
    resolve(dotted)


def test_the_entry_point_groups_named_in_the_docs_are_ours() -> None:
    from omnirun import plugins

    assert {plugins.BACKENDS_GROUP, plugins.TASKS_GROUP} == {"omnirun.backends", "omnirun.tasks"}
