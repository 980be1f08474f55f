"""omnirun.report on real sweeps of the tiny Llama: the runs table, report.md/.csv, plots, failures, comparisons."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from omnirun import report

from samples import assert_png


def test_axes_numeric_on_x_categorical_as_series_and_grouped_bars(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "run": [str(i) for i in range(4)],
            "status": ["completed"] * 4,
            "hardware.dtype": ["float32", "float32", "bfloat16", "bfloat16"],
            "model": ["gpt2", "qwen", "gpt2", "qwen"],
            "output_tokens_per_s": [10.0, 20.0, 15.0, 25.0],
        }
    )
    assert report.choose_axes(frame, ["hardware.dtype", "model"])[0] == "hardware.dtype"
    frame["task.batch_size"] = [1, 2, 4, 8]
    assert report.choose_axes(frame, ["model", "task.batch_size"]) == ("task.batch_size", ["model"])
    png = report.plot_metrics(
        frame, ["output_tokens_per_s"], tmp_path / "bars.png", x="hardware.dtype", series=["model"], title="t"
    )
    assert png is not None
    assert_png(png, min_kb=10)
