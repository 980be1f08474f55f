"""Slide-ready matplotlib figures: metrics against what a sweep varied, and baseline vs candidate bars.

Figures are drawn on an Agg canvas (no display, no global pyplot state), 150 dpi, one panel per metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from omnirun.reporting.load import BY_COLUMN, axis_rank
from omnirun.reporting.values import hashable, is_numeric, mean, natural, show, unique

PARAM_LABELS = {
    "task.batch_size": "Batch size",
    "benchmark.batch_size": "Batch size",
    "benchmark.prompt_tokens": "Prompt length (tokens)",
    "benchmark.new_tokens": "New tokens per sequence",
    "generation.max_new_tokens": "Max new tokens",
    "generation.temperature": "Temperature",
    "generation.top_p": "Top-p",
    "generation.top_k": "Top-k",
    "generation.num_beams": "Beams",
    "hardware.dtype": "dtype",
    "hardware.quantization": "Quantization",
    "hardware.device": "Device",
    "hardware.num_threads": "Threads",
    "model": "Model",
    "model.name": "Model",
    "generation": "Generation preset",
    "hardware": "Hardware preset",
    "task": "Task",
}
THROUGHPUT = ("output_tokens_per_s", "decode_tokens_per_s", "prefill_tokens_per_s")
LATENCY = ("ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50")
COMPARED = ("output_tokens_per_s", "decode_tokens_per_s", "ttft_ms_p50", "e2e_ms_p50", "tpot_ms_p50")
"""The comparison plot's panels: the first four of these that the runs have."""
MAX_SERIES = 8
STYLE: Any = {  # matplotlib rc parameters (its stubs want literal keys)
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "legend.title_fontsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "savefig.facecolor": "white",
}


def choose_axes(frame: pd.DataFrame, swept: Sequence[str]) -> tuple[str | None, list[str]]:
    """The x-axis key and the series keys, among the swept keys that still vary in `frame`: numeric keys
    first, batch sizes and lengths before the rest, then the key with the most values. (None, []) when
    nothing varies, or when more than three keys vary or that would draw more than MAX_SERIES lines (one bar per
    run then)."""
    varying = [k for k in swept if k in frame and len({hashable(v) for v in frame[k]}) > 1]
    if not varying:
        return None, []
    ranked = sorted(varying, key=lambda k: axis_rank(k, list(frame[k])))
    if len(ranked) > 3 or len(_series_groups(frame, ranked[1:])) > MAX_SERIES:  # unreadable: one bar per run
        return None, []
    return ranked[0], ranked[1:]


def plot_metrics(
    frame: pd.DataFrame,
    columns: Sequence[str],
    path: Path,
    *,
    x: str | None,
    series: Sequence[str] = (),
    title: str,
    subtitle: str = "",
) -> Path | None:
    """One panel per metric column: against `x` (a line per series value when numeric, grouped bars when
    categorical), or one horizontal bar per run when `x` is None. Returns the PNG's path, or None with
    nothing to draw."""
    columns = [c for c in columns if c in frame and frame[c].notna().any()]
    if frame.empty or not columns:
        return None
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    height = 4.8 if x is not None else max(3.6, 0.32 * len(frame) + 2.2)
    with rc_context(STYLE):
        fig = Figure(figsize=(max(7.5, 5.4 * len(columns)), height), dpi=150, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(columns), squeeze=False, sharey=x is None)[0]
        for ax, column in zip(axes, columns, strict=True):
            metric = BY_COLUMN[column]
            ax.set_title(metric.title)
            if x is None:
                _run_bars(ax, [str(r) for r in frame["run"]], list(frame[column]))
                ax.set_xlabel(metric.unit)
                ax.xaxis.set_major_formatter(FuncFormatter(_tick))
                continue
            if is_numeric(frame[x]):
                _lines(ax, frame, x, series, column)
            else:
                categories = [show(v) for v in unique(frame[x])]
                values = {
                    name: [mean(part.loc[part[x].map(show) == c, column]) for c in categories]
                    for name, part in _series_groups(frame, series)
                }
                _bars(ax, categories, values)
            ax.set_xlabel(_axis_label(x))
            ax.set_ylabel(metric.unit)
            ax.set_ylim(0, ax.dataLim.y1 * 1.15 if ax.dataLim.y1 > 0 else 1)  # room for markers and labels
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        if x is None:
            axes[0].set_ylabel("Run")
        handles, labels = axes[0].get_legend_handles_labels()
        if series and labels:
            fig.legend(
                handles,
                labels,
                loc="outside right center",
                title=" / ".join(param_label(k) for k in series),
                frameon=False,
            )
        fig.suptitle(title, fontsize=16, fontweight="bold")
        if subtitle:
            fig.supxlabel(subtitle, fontsize=10, color="0.4")
        fig.savefig(path)
    return path


def plot_comparison(table: pd.DataFrame, path: Path, *, names: tuple[str, str]) -> Path | None:
    """Grouped bars, baseline next to candidate for each configuration present on both sides, one panel per
    headline metric, the ratio printed above each candidate bar."""
    columns = [
        c for c in COMPARED if c in set(table["metric"]) and table.loc[table["metric"] == c, "ratio"].notna().any()
    ][:4]
    if not columns:
        return None
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    both = table[(table["baseline_status"] != "absent") & (table["candidate_status"] != "absent")]
    labels = list(dict.fromkeys(both["match"]))  # configurations present on one side only are not drawn
    ncols = min(2, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    width = max(6.0, 1.3 * len(labels) + 2.5)
    with rc_context(STYLE):
        fig = Figure(figsize=(width * ncols, 4.6 * nrows), dpi=150, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, column in zip(axes, columns, strict=False):
            part = table[table["metric"] == column].set_index("match").reindex(labels)
            metric = BY_COLUMN[column]
            values = {names[0]: list(part["baseline"]), names[1]: list(part["candidate"])}
            containers = _bars(ax, [_wrap(label) for label in labels], values, annotate=False)
            ratios = [f"{r:.2f}×" if pd.notna(r) else "" for r in part["ratio"]]
            ax.bar_label(containers[-1], labels=ratios, padding=3, fontsize=10, fontweight="bold")
            ax.margins(y=0.15)
            ax.set_title(metric.title)
            ax.set_ylabel(metric.unit)
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        for ax in axes[len(columns) :]:
            ax.set_visible(False)
        handles, legend = axes[0].get_legend_handles_labels()
        fig.legend(handles, legend, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Candidate vs baseline (ratio = candidate / baseline)", fontsize=15, fontweight="bold")
        fig.savefig(path)
    return path


def _lines(ax: Any, frame: pd.DataFrame, x: str, series: Sequence[str], column: str) -> None:
    """One line per series value against a numeric `x` (means of repeated points); log2 axis over wide ranges."""
    xs_all = sorted({float(v) for v in frame[x].dropna()})
    for name, part in _series_groups(frame, series):
        points = part.dropna(subset=[x, column]).groupby(x)[column].mean().sort_index()
        if len(points):
            ax.plot(
                list(points.index), list(points.values), marker="o", linewidth=2.2, markersize=7, label=name or None
            )
    if xs_all and xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 16:
        ax.set_xscale("log", base=2)
    if len(xs_all) <= 12:
        ax.set_xticks(xs_all, [show(v) for v in xs_all])
        ax.minorticks_off()


def _bars(ax: Any, categories: list[str], values: dict[str, list[Any]], *, annotate: bool = True) -> list[Any]:
    """Grouped bars: one group per category, one bar per series (`values`: series name → one value per
    category; the name "" draws no legend entry); values printed on the bars when they are few."""
    n = max(1, len(values))
    width = 0.8 / n
    containers = []
    for i, (name, ys) in enumerate(values.items()):
        positions = [j + (i - (n - 1) / 2) * width for j in range(len(categories))]
        heights = [float(y) if y is not None and pd.notna(y) else 0.0 for y in ys]
        bars = ax.bar(positions, heights, width * 0.92, label=name or None)
        if annotate and len(categories) * n <= 16:
            labels = [_bar_label(y) if h else "" for y, h in zip(ys, heights, strict=True)]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=9)
        containers.append(bars)
    ax.set_xticks(range(len(categories)), categories)
    if max(len(line) for c in categories for line in c.split("\n")) * len(categories) > 60:  # long labels: slanted
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.grid(axis="x", visible=False)
    return containers


def _run_bars(ax: Any, runs: list[str], values: list[Any]) -> None:
    """One horizontal bar per run, top to bottom in run order, the value at the end of each bar."""
    widths = [float(v) if v is not None and pd.notna(v) else 0.0 for v in values]
    bars = ax.barh(range(len(runs)), widths, 0.7)
    if len(runs) <= 40:
        ax.bar_label(bars, labels=[_bar_label(w) if w else "" for w in widths], padding=3, fontsize=9)
    ax.set_yticks(range(len(runs)), runs)
    ax.set_ylim(len(runs) - 0.5, -0.5)
    ax.set_xlim(0, max(widths) * 1.2 if max(widths) > 0 else 1)
    ax.grid(axis="y", visible=False)


def _series_groups(frame: pd.DataFrame, series: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not series:
        return [("", frame)]
    keys = frame[list(series)].map(show).agg(" / ".join, axis=1)
    order = sorted(dict.fromkeys(keys), key=lambda s: natural(s.split(" / ")))
    return [(name, frame[keys == name]) for name in order]


def param_label(key: str | None) -> str:
    return PARAM_LABELS.get(key or "", key or "run")


def _axis_label(key: str) -> str:
    label = param_label(key)
    return label if label == key else f"{label} ({key})"


def _bar_label(value: float) -> str:
    magnitude = abs(value)
    return f"{value:,.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"


def _tick(value: float, _pos: object = None) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def _wrap(label: str) -> str:
    """`task.batch_size=1 generation.temperature=0.2` → `batch_size=1` and `temperature=0.2` on two lines."""
    parts = [p.partition("=") for p in label.split(" ")]
    return "\n".join(f"{k.rsplit('.', 1)[-1]}={v}" if sep else k for k, sep, v in parts)
