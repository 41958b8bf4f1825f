"""Drawing helpers every figure kind uses: a run group's curve with its band and markers,
diverged runs, robust axis limits, titles and legends, and saving a figure whole."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnlab.figures.groups import RunGroup, mean_std
from bnlab.lab.atomic import atomic_file
from bnlab.lab.results import ExperimentResults

DIVERGED_STYLE = {"marker": "x", "markersize": 9, "markeredgewidth": 2.2, "linestyle": "none"}


# --- drawing ----------------------------------------------------------------------------------


def draw_group(ax: Axes, group: RunGroup, series_of, label: str | None, markers: bool = True) -> list[tuple]:
    """Draws the mean over the group's done runs (with a +-std band if several) and each diverged
    run on its own, thinner, ending where it stopped. series_of(run_id) gives a run's y indexed
    by x. Returns the (x, y, colour) where the diverged runs stopped, to be marked with an 'x'."""
    done = group.runs.loc[group.runs["status"] == "done", "run_id"]
    if len(done):
        band = group.banded and len(done) > 1
        draw_curve(ax, mean_std([series_of(r) for r in done]), group, label, markers, band)
        label = None
    stops = []
    for run_id in group.runs.loc[group.runs["status"] == "diverged", "run_id"]:
        y = series_of(run_id)
        draw_curve(ax, pd.DataFrame({"mean": y, "std": 0.0}), group, label, markers, band=False, linewidth=1.0)
        label = None  # a group whose seeds all diverged is labelled by its first run
        if len(y):  # (a run that diverged at once has no curve to mark; the title still counts it)
            stops.append((y.index[-1], y.iloc[-1], group.color))
    return stops


def draw_curve(
    ax: Axes, curve: pd.DataFrame, group: RunGroup, label: str | None, markers: bool, band: bool, linewidth=1.8
) -> None:
    """curve: 'mean' and 'std' columns indexed by x."""
    x = curve.index.to_numpy(dtype=float)
    marker = {"marker": group.marker, "markersize": 4} if markers and group.marker else {}
    ax.plot(x, curve["mean"], color=group.color, linestyle=group.linestyle, linewidth=linewidth, label=label, **marker)
    if band:
        low, high = curve["mean"] - curve["std"], curve["mean"] + curve["std"]
        ax.fill_between(x, low, high, color=group.color, alpha=0.18, linewidth=0)


def mark_diverged(ax: Axes, points: list[tuple]) -> None:
    """An 'x' at each (x, y, colour), after everything else is drawn. A NaN or off-axis y goes on
    a row along the top of the axis instead, one row per colour so equal x stay apart; the y-range
    is raised to make room for the rows."""
    low, high = ax.get_ylim()
    on_axis = [math.isfinite(y) and low <= y <= high for _, y, _ in points]
    rows = list(dict.fromkeys(color for (_, _, color), inside in zip(points, on_axis, strict=True) if not inside))
    if rows:
        ax.set_ylim(low, high + 0.1 * len(rows) * (high - low))
    for (x, y, color), inside in zip(points, on_axis, strict=True):
        if inside:
            ax.plot([x], [y], color=color, clip_on=False, zorder=5, **DIVERGED_STYLE)
        else:  # x in data units, y in axis units
            row = 0.96 - 0.06 * rows.index(color)
            ax.plot(
                [x], [row], color=color, clip_on=False, zorder=5, transform=ax.get_xaxis_transform(), **DIVERGED_STYLE
            )


def set_robust_ylim(ax: Axes, low: float, peaks: np.ndarray) -> None:
    """y from `low` up to the highest of the peaks (one per run), except peaks more than 3 times as
    far above `low` as the median peak: those are clipped, so a few huge losses (a bad weight
    scale, an exploding run) do not flatten everything else."""
    peaks = peaks[np.isfinite(peaks)]
    if peaks.size == 0 or not math.isfinite(low):
        return
    median = np.median(peaks)
    high = min(peaks.max(), median + 3 * (median - low))
    pad = 0.05 * (high - low) or 0.1 * abs(high) or 0.1
    ax.set_ylim(low - pad, high + pad)


def label_axes(ax: Axes, title: str, xlabel: str | None, ylabel: str) -> None:
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def finish_figure(fig: Figure, results: ExperimentResults, title: str, legend_ax: Axes, groups: list[RunGroup]) -> None:
    """The title, with notes on seeds and on diverged, failed and pending runs; one legend below
    all panels, so it never covers data."""
    notes = []
    seeds = {g.seeds for g in groups}
    if max(seeds, default=1) > 1:
        spread = " \u00b1 1 std" if any(g.banded for g in groups) else ""
        notes.append(f"mean{spread} over {seeds.pop() if len(seeds) == 1 else 'the'} seeds")
    diverged = sum(int((g.runs["status"] == "diverged").sum()) for g in groups)
    if diverged:
        notes.append(f"{_runs(diverged, 'diverged')} marked \u00d7")
    counts = results.runs["status"].value_counts()
    for status in ("failed", "pending"):
        if counts.get(status, 0):
            notes.append(f"{_runs(int(counts[status]), status)} not shown")
    fig.suptitle(title + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=13)
    handles, labels = legend_ax.get_legend_handles_labels()
    if diverged:
        handles.append(Line2D([], [], color="black", **DIVERGED_STYLE))
        labels.append("diverged")
    if handles:
        # About 12 characters per inch at the legend's font size, plus room for the line sample.
        columns = max(1, min(len(labels), int(fig.get_figwidth() * 12 // (max(map(len, labels)) + 7))))
        rows = math.ceil(len(labels) / columns)
        fig.set_figheight(fig.get_figheight() + 0.22 * max(0, rows - 4))  # keep the panels' height
        fig.legend(handles, labels, loc="outside lower center", ncol=columns, frameon=False)


def _runs(n: int, status: str) -> str:
    return f"{n} {status} run{'s' if n > 1 else ''}"


def save_figure(fig: Figure, file: Path, fmt: str) -> Path:
    """Writes atomically: a temporary file in the same folder, then renamed over `file`."""
    with atomic_file(file) as f:
        fig.savefig(f, format=fmt, dpi=110)
    return file
