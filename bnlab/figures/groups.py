"""Run groups (the runs sharing every swept value but the seed), their labels and colours, and
the curves drawn for them (smoothed losses, per-epoch series, means and spreads over seeds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps

from bnlab.lab.formatting import format_short
from bnlab.lab.results import ExperimentResults

MAX_RAW_GROUPS = 2  # the raw loss is drawn behind the moving average only for this few groups
MAX_DETAILED_GROUPS = 10  # beyond this many lines, std bands and markers only make a blur
NORM = "model.normalization"
AXIS_NAMES = {"model.weight_scale": "Weight initialization scale"}


# --- run groups and their labels ---------------------------------------------------------------


@dataclass
class RunGroup:
    """Runs sharing every swept value but the seed, with the label and look of their line."""

    label: str
    runs: pd.DataFrame
    color: tuple
    linestyle: str
    marker: str  # "" for none
    banded: bool  # a +-std band around the mean, if it has several seeds

    @property
    def seeds(self) -> int:
        return self.runs["seed"].nunique()


def finished_runs(results: ExperimentResults) -> pd.DataFrame:
    """The runs that have curves to draw: done and diverged."""
    return results.runs[results.runs["status"].isin(["done", "diverged"])]


def run_groups(results: ExperimentResults, runs: pd.DataFrame, keys: list[str]) -> list[RunGroup]:
    """One group per distinct combination of `keys` among `runs`, in the order the runs appear.

    'none' runs are dashed with triangles, other normalizations solid (then dotted, dash-dotted)
    with circles; the colour tells the values of the other keys, or each group apart when the
    other keys do not vary (line styles alone are hard to tell apart). Beyond MAX_DETAILED_GROUPS
    groups, lines have no markers and no std bands."""
    if runs.empty:
        return []
    if keys:
        parts = [(dict(zip(keys, v, strict=True)), g) for v, g in runs.groupby(keys, sort=False, dropna=False)]
    else:
        parts = [({}, runs)]
    parts = [({k: None if is_nan(v) else v for k, v in values.items()}, g) for values, g in parts]
    rest = [tuple((k, v) for k, v in values.items() if k != NORM) for values, _ in parts]
    distinct_rest = list(dict.fromkeys(rest))
    colors = _colors(len(distinct_rest) if len(distinct_rest) > 1 else len(parts))
    norms = [n for n in dict.fromkeys(values.get(NORM) for values, _ in parts) if n != "none"]
    several_seed_counts = len({g["seed"].nunique() for _, g in parts}) > 1
    detailed = len(parts) <= MAX_DETAILED_GROUPS
    groups = []
    for i, ((values, runs_of_group), r) in enumerate(zip(parts, rest, strict=True)):
        label = _group_label(results, values)
        if several_seed_counts:  # else the title tells the number of seeds once
            label += f" ({runs_of_group['seed'].nunique()} seeds)"
        norm = values.get(NORM)
        linestyle = "--" if norm == "none" else ("-", ":", "-.")[norms.index(norm) % 3 if norm in norms else 0]
        color = colors[distinct_rest.index(r)] if len(distinct_rest) > 1 else colors[i]
        marker = ("^" if norm == "none" else "o") if detailed else ""
        groups.append(RunGroup(label, runs_of_group, color, linestyle, marker, banded=detailed))
    return groups


def _group_label(results: ExperimentResults, values: dict) -> str:
    """E.g. 'batchnorm, batch size 10' or 'none, weight scale 0.001' (the normalization as the
    tables and run ids write it: 'none', not 'no normalization')."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue  # this key was not swept for these runs (a union of sweeps)
        if key == NORM:
            parts.append(str(value))
        elif _is_number(value):  # 3 significant digits for real numbers: 0.000316, not 0.000316228
            text = f"{value:.3g}" if isinstance(value, (float, np.floating)) else str(value)
            parts.append(f"{key.rsplit('.', 1)[-1].replace('_', ' ')} {text}")
        else:
            parts.append(f"{key.rsplit('.', 1)[-1].replace('_', ' ')} {format_short(value)}")
    return ", ".join(parts) or _fixed_label(results)


def _fixed_label(results: ExperimentResults) -> str:
    """Label of the one group of an experiment without other swept keys: its normalization."""
    model = results.spec.get("model")
    if isinstance(model, dict) and "normalization" in model:
        return norm_name(model["normalization"])
    return results.name


def norm_name(value) -> str:
    return "none" if value is None else str(value)


def axis_name(key: str) -> str:
    return AXIS_NAMES.get(key, key.rsplit(".", 1)[-1].replace("_", " ").capitalize())


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_nan(value) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def numeric_key(results: ExperimentResults, key: str) -> bool:
    column = results.runs[key]
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def sweepable(results: ExperimentResults, key: str) -> bool:
    return numeric_key(results, key) and results.runs[key].nunique() > 3


def log_spaced(values: np.ndarray) -> bool:
    """All positive and spanning at least two decades."""
    values = values[np.isfinite(values)]
    return values.size > 0 and values.min() > 0 and values.max() / values.min() >= 100


def _colors(n: int) -> list:
    """Distinct colours: tab10 for up to 10 lines, else evenly spaced along viridis."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](v) for v in np.linspace(0, 0.95, n)]


# --- curves -----------------------------------------------------------------------------------


def smoothing_window(histories: list[pd.DataFrame]) -> int:
    """Iterations per epoch (the longest epoch seen), at most a fifth of the run so it stays visible."""
    per_epoch = max((h.groupby("epoch").size().max() for h in histories if len(h)), default=1)
    longest = max((len(h) for h in histories), default=1)
    return int(max(1, min(per_epoch, longest // 5)))


def smoothed_loss(history: pd.DataFrame, window: int) -> pd.Series:
    """Centred moving average of one run's loss, indexed by iteration; nan and inf losses are left
    out of the averages, so a diverged run's curve runs up to the iteration where it stopped."""
    loss = history["loss"].where(np.isfinite(history["loss"]))
    smooth = loss.rolling(window, center=True, min_periods=1).mean()
    return pd.Series(smooth.to_numpy(), index=history["iteration"].to_numpy())


def loss_levels(group: RunGroup, smoothed: dict[str, pd.Series]) -> tuple[list[float], list[float]]:
    """Lowest and highest points of a group's smoothed loss curves (and std band), for the y-range.
    A diverged run peaks where it explodes, so its median stands in for its peak."""
    lows, peaks = [], []
    done = [
        smoothed[r] for r, status in zip(group.runs["run_id"], group.runs["status"], strict=True) if status == "done"
    ]
    if group.banded and len(done) > 1:
        band = mean_std(done)
        lows.append((band["mean"] - band["std"]).min())
        peaks.append((band["mean"] + band["std"]).max())
    for loss, status in zip(smoothed.values(), group.runs["status"], strict=True):
        if loss.notna().any():
            lows.append(loss.min())
            peaks.append(loss.max() if status == "done" else loss.median())
    return lows, peaks


def epoch_series(results: ExperimentResults, run_id: str, column: str) -> pd.Series:
    rows = results.epochs[results.epochs["run_id"] == run_id]
    return pd.Series(rows[column].to_numpy(), index=rows["epoch"].to_numpy())


def mean_std(series: list[pd.Series]) -> pd.DataFrame:
    """Mean and std (0 for one run) across runs at each x, over the runs that reach that x."""
    stacked = pd.concat(series, axis=1) if series else pd.DataFrame()
    return pd.DataFrame({"mean": stacked.mean(axis=1), "std": stacked.std(axis=1).fillna(0.0)}).sort_index()
