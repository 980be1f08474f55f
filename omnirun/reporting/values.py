"""How parameter values and numbers are shown, compared and ordered in tables, labels and plots."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def show(value: Any) -> str:
    """A parameter value for labels: numbers without trailing zeros, paths by their last component."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(short(value)) if isinstance(value, str) else str(value)


def short(value: Any) -> Any:
    """A path's last component (`/models/tiny-llama` → `tiny-llama`); anything else unchanged."""
    if isinstance(value, str) and "/" in value:
        return value.rstrip("/").rsplit("/", 1)[-1]
    return value


def fmt(value: Any) -> str:
    """A metric for a table cell: three significant figures or so, `-` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return str(value)
    number = float(value)
    magnitude = abs(number)
    return f"{number:,.0f}" if magnitude >= 1000 else f"{number:.1f}" if magnitude >= 100 else f"{number:.2f}"


def cell(value: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def hashable(value: Any) -> Any:
    """A value usable as a set member or dict key: NaN as None, lists and dicts as JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def is_numeric(values: Iterable[Any]) -> bool:
    """Whether every present value is a real number (booleans are not)."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(present) and all(isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present)


def unique(values: Iterable[Any]) -> list[Any]:
    """The distinct values in first-seen order, or sorted when they are all numbers."""
    seen: dict[Any, Any] = {}
    for v in values:
        seen.setdefault(hashable(v), v)
    items = list(seen.values())
    return sorted(items) if is_numeric(items) else items


def mean(values: pd.Series) -> float | None:
    present = values.dropna()
    return float(present.mean()) if len(present) else None


def natural(parts: Iterable[str]) -> list[tuple[int, Any]]:
    """A sort key that orders `job 2` before `job 10`."""
    key: list[tuple[int, Any]] = []
    for part in parts:
        key += [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", part) if t]
    return key


def pct(value: float | None) -> str:
    """A share (0..1) as a percentage, `-` when missing."""
    return "-" if value is None else f"{value * 100:.1f}%"
