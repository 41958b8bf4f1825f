"""The draw function of each figure kind of bnlab.spec.figure_kinds.FIGURE_KINDS (DRAW), and the
figures they draw."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlab.errors import ResultsError
from bnlab.figures.draw import (
    draw_curve,
    draw_group,
    finish_figure,
    label_axes,
    mark_diverged,
    set_robust_ylim,
)
from bnlab.figures.groups import (
    MAX_RAW_GROUPS,
    NORM,
    RunGroup,
    axis_name,
    epoch_series,
    finished_runs,
    is_nan,
    log_spaced,
    loss_levels,
    mean_std,
    norm_name,
    run_groups,
    smoothed_loss,
    smoothing_window,
)
from bnlab.lab.results import ExperimentResults
from bnlab.nn.optim import DEFAULTS as OPTIM_DEFAULTS
from bnlab.nn.probes import growth_factor
from bnlab.spec.figure_kinds import FIGURE_KINDS

YANG_FACTOR = math.pi / (math.pi - 1)  # Yang et al. 2019: BN ReLU nets, squared gradient norm per layer
MAX_DEFAULT_LAYERS = 3  # without `layers`, probe figures show the first, a middle and the last layer


def history_figure(results: ExperimentResults, title: str | None = None) -> Figure:
    """Training loss per iteration (top), training and validation accuracy per epoch (bottom)."""
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplot_mosaic([["loss", "loss"], ["train", "val"]])
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    by_run = dict(tuple(results.history.groupby("run_id")))
    history = {r: by_run.get(r, results.history.iloc[:0]) for r in results.runs["run_id"]}
    diverged: dict[str, list] = {"loss": [], "train": [], "val": []}  # (x, y, colour) per panel
    lows, peaks = [], []  # per run: lowest and typical highest smoothed loss, for the y-range
    for group in groups:
        window = smoothing_window([history[r] for r in group.runs["run_id"]])
        if len(group.runs) == 1 and len(groups) <= MAX_RAW_GROUPS:
            raw = history[group.runs["run_id"].iloc[0]]
            raw = raw[np.isfinite(raw["loss"])]
            axes["loss"].plot(raw["iteration"], raw["loss"], color=group.color, alpha=0.25, linewidth=0.6)
            if group.runs["status"].iloc[0] == "done":  # the y-range takes in the bulk of its noise
                lows.append(raw["loss"].min())
                peaks.append(np.percentile(raw["loss"], 99))
        smoothed = {r: smoothed_loss(history[r], window) for r in group.runs["run_id"]}
        diverged["loss"] += draw_group(axes["loss"], group, smoothed.__getitem__, None, markers=False)
        group_lows, group_peaks = loss_levels(group, smoothed)
        lows += group_lows
        peaks += group_peaks
        for panel, column in (("train", "train_acc"), ("val", "val_acc")):
            label = group.label if panel == "train" else None
            diverged[panel] += draw_group(axes[panel], group, lambda r, c=column: epoch_series(results, r, c), label)
    set_robust_ylim(axes["loss"], min(lows, default=0.0), np.array(peaks))
    label_axes(axes["loss"], "Training loss (moving average over one epoch)", "Iteration", "Loss")
    label_axes(axes["train"], "Training accuracy", "Epoch", "Accuracy")
    label_axes(axes["val"], "Validation accuracy", "Epoch", "Accuracy")
    for panel, points in diverged.items():
        mark_diverged(axes[panel], points)
    for panel in ("train", "val"):
        axes[panel].xaxis.set_major_locator(MaxNLocator(integer=True))
    finish_figure(fig, results, title or f"{results.name}: training history", axes["train"], groups)
    return fig


# A panel's title and y unit, for each metric or statistic that sweep_figure and landscape_figure show
PANEL_LABELS = {
    "best_val_acc": ("Best validation accuracy", "Accuracy"),
    "best_train_acc": ("Best training accuracy", "Accuracy"),
    "final_train_loss": ("Final training loss (mean of the last 100 iterations)", "Loss"),
    "loss_range": ("Loss landscape: range of the loss along the gradient", "max - min loss"),
    "grad_change": ("Gradient predictiveness: largest change of the gradient", "max ||g' - g||"),
    "beta_smoothness": ("Effective beta-smoothness", "max ||g' - g|| / ||step||"),
}


SWEEP_PANELS = ("best_val_acc", "best_train_acc", "final_train_loss")
LANDSCAPE_PANELS = ("loss_range", "grad_change", "beta_smoothness")


def _panel_column(keys: Sequence[str]) -> tuple[Figure, np.ndarray]:
    """A portrait page of one panel per metric or statistic in keys, stacked over a shared x axis
    and labelled from PANEL_LABELS."""
    fig = Figure(figsize=(8.5, 10), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True)
    for ax, key in zip(axes, keys, strict=True):
        panel_title, unit = PANEL_LABELS[key]
        label_axes(ax, panel_title, None, unit)
    return fig, axes


def sweep_figure(results: ExperimentResults, x: str, title: str | None = None) -> Figure:
    """Best val accuracy, best train accuracy and final training loss against swept key x; one line
    per group of the other swept keys. Diverged runs are left out of the lines (a gap where all
    seeds diverged) and drawn as an 'x' at the top of each panel at their x."""
    runs = finished_runs(results).dropna(subset=[x])
    groups = run_groups(results, runs, [k for k in results.swept_keys if k != x])
    fig, axes = _panel_column(SWEEP_PANELS)
    for ax, metric in zip(axes, SWEEP_PANELS, strict=True):
        for group in groups:
            done = group.runs[group.runs["status"] == "done"]
            stats = done.groupby(x)[metric].agg(["mean", "std"]).fillna({"std": 0.0})
            stats = stats.reindex(sorted(group.runs[x].unique()))
            draw_curve(ax, stats, group, group.label, markers=True, band=group.banded and group.seeds > 1)
        if metric == "final_train_loss":
            losses = runs.loc[runs["status"] == "done", metric].to_numpy(dtype=float)
            losses = losses[np.isfinite(losses)]
            if log_spaced(losses):  # exploding losses span orders of magnitude: show them all
                ax.set_yscale("log")
            else:
                set_robust_ylim(ax, np.nanmin(losses, initial=np.inf), losses)
        diverged = [(v, math.nan, g.color) for g in groups for v in g.runs.loc[g.runs["status"] == "diverged", x]]
        mark_diverged(ax, diverged)
    if log_spaced(runs[x].to_numpy(dtype=float)):
        axes[-1].set_xscale("log")
    axes[-1].set_xlabel(axis_name(x))
    finish_figure(fig, results, title or f"{results.name}: effect of {axis_name(x).lower()}", axes[0], groups)
    return fig


def batch_size_figures(results: ExperimentResults, title: str | None = None) -> dict[str, Figure]:
    """Training and validation accuracy per epoch for each batch size: one figure per
    normalization, keyed by its name, each also showing the 'none' runs (dashed) as the reference."""
    runs = finished_runs(results)
    if NORM not in results.swept_keys:  # one normalization for the whole experiment
        norm = norm_name((results.spec.get("model") or {}).get("normalization"))
        return {norm: _batch_size_figure(results, runs, norm, title)}
    norms = [n for n in dict.fromkeys(runs[NORM]) if n != "none"] or ["none"]
    return {norm: _batch_size_figure(results, runs[runs[NORM].isin([norm, "none"])], norm, title) for norm in norms}


def _batch_size_figure(results: ExperimentResults, runs: pd.DataFrame, norm: str, title: str | None) -> Figure:
    fig = Figure(figsize=(9, 8.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    groups = run_groups(results, runs, results.swept_keys)
    what = "normalization none" if norm == "none" else norm  # "batch size and none" would not read
    for ax, column, name in zip(axes, ("train_acc", "val_acc"), ("Training", "Validation"), strict=True):
        diverged = []
        for group in groups:
            diverged += draw_group(ax, group, lambda r, c=column: epoch_series(results, r, c), group.label)
        label_axes(ax, f"{name} accuracy ({what})", None, "Accuracy")
        mark_diverged(ax, diverged)
    axes[-1].set_xlabel("Epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    finish_figure(fig, results, title or f"{results.name}: batch size and {what}", axes[0], groups)
    return fig


def activations_figure(results: ExperimentResults, layers: list[int] | None = None, title: str | None = None) -> Figure:
    """The BN paper's Figure 1(b, c): the 15th, 50th and 85th percentiles of a hidden layer's
    nonlinearity inputs over training, a panel per run group (columns) and chosen layer (rows);
    with several seeds each percentile is the mean over them."""
    probes = _probe_table(results, FIGURE_KINDS["activations"].statistics)
    layers = layers or _spread(sorted(probes.loc[probes["layer"] > 0, "layer"].unique()))
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    fig = Figure(figsize=(3.6 * len(groups) + 1, 2.6 * len(layers) + 1.2), layout="constrained")
    # each panel its own y-range: what matters is the drift within it, and the unnormalized net's
    # inputs can be orders of magnitude wider than the normalized ones
    axes = fig.subplots(len(layers), len(groups), sharex=True, squeeze=False)
    for row, layer in enumerate(layers):
        for col, group in enumerate(groups):
            ax = axes[row, col]
            curves = {q: _probe_mean(probes, group, layer, q)["mean"] for q in FIGURE_KINDS["activations"].statistics}
            x = curves["p50"].index.to_numpy(dtype=float)
            ax.fill_between(x, curves["p15"], curves["p85"], color=group.color, alpha=0.25, linewidth=0)
            marker = "o" if len(x) == 1 else ""  # a run that diverged at once has one point to show
            styles = (("p15", ":", "15th and 85th percentiles"), ("p50", "-", "median"), ("p85", ":", None))
            for q, style, label in styles:
                ax.plot(x, curves[q], color=group.color, linestyle=style, marker=marker,
                        linewidth=1.6 if q == "p50" else 1.0, label=label if row == col == 0 else None)  # fmt: skip
            stops = []  # diverged runs: an 'x' at their last recorded median
            for run_id in group.runs.loc[group.runs["status"] == "diverged", "run_id"]:
                median = _probe_series(probes, run_id, layer, "p50")
                if len(median):
                    stops.append((median.index[-1], median.iloc[-1], group.color))
            mark_diverged(ax, stops)
            label_axes(ax, f"{group.label}, layer {layer}", "Iteration" if row == len(layers) - 1 else None,
                   "Nonlinearity input" if col == 0 else "")  # fmt: skip
    finish_figure(fig, results, title or f"{results.name}: distribution of the nonlinearity inputs over training",
            axes[0, 0], groups)  # fmt: skip
    return fig


def ics_figure(results: ExperimentResults, layers: list[int] | None = None, title: str | None = None) -> Figure:
    """Santurkar et al.'s internal covariate shift over training: the l2 distance (top) and the
    cosine (bottom) between a layer's gradient before and after the layers below it are updated;
    a column per chosen layer, a line per run group (mean +- std over seeds)."""
    probes = _probe_table(results, FIGURE_KINDS["ics"].statistics)
    layers = layers or _spread(sorted(probes.loc[probes["statistic"] == "ics_l2", "layer"].unique()))
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    fig = Figure(figsize=(4.2 * len(layers) + 1, 7.5), layout="constrained")
    axes = fig.subplots(2, len(layers), sharex=True, squeeze=False)
    rows = (("ics_l2", "||G - G'|| (l2 difference)"), ("ics_cos", "cos(G, G')"))
    for col, layer in enumerate(layers):
        for row, (statistic, unit) in enumerate(rows):
            ax = axes[row, col]
            for group in groups:
                _draw_probe(ax, probes, group, layer, statistic, label=group.label if row == col == 0 else None)
            label_axes(ax, f"Layer {layer}", "Iteration" if row == 1 else None, unit if col == 0 else "")
            if statistic == "ics_l2":
                _log_if_spread(ax, probes, statistic)
    finish_figure(fig, results, title or f"{results.name}: internal covariate shift (Santurkar et al., Def. 2.1)",
            axes[0, 0], groups)  # fmt: skip
    return fig


def landscape_figure(results: ExperimentResults, title: str | None = None) -> Figure:
    """Santurkar et al.'s Figure 4 measures along the gradient over training: the range of the loss,
    the largest change of the gradient (predictiveness) and the effective beta-smoothness; a line
    per run group (mean +- std over seeds), log axes where the values span two decades or more."""
    probes = _probe_table(results, FIGURE_KINDS["landscape"].statistics)
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    fig, axes = _panel_column(LANDSCAPE_PANELS)
    for ax, statistic in zip(axes, LANDSCAPE_PANELS, strict=True):
        for group in groups:
            _draw_probe(ax, probes, group, 0, statistic, label=group.label if statistic == "loss_range" else None)
        _log_if_spread(ax, probes, statistic)
    axes[-1].set_xlabel("Iteration")
    finish_figure(fig, results, title or f"{results.name}: loss landscape along the gradient", axes[0], groups)
    return fig


def depth_figure(results: ExperimentResults, title: str | None = None) -> Figure:
    """At initialization (the first recorded iteration), against the layer: the squared norm of
    each weight gradient (left) and the variance of each layer's output, for residual nets of the
    stream after each block (right); a line per run group (mean over seeds), log scale. Beside them,
    dotted, the predictions: for plain batch-norm nets Yang et al.'s growth by pi/(pi - 1) per layer
    towards the input (anchored at the last hidden layer); for plain nets with scaled weight
    standardization and no normalization, Brock et al.'s constant variance (anchored at layer 1);
    for pre-activation residual streams De & Smith's doubling per block without normalization
    (anchored at block 1) and 1 + l with batch norm (the stem's batch norm gives the stream unit
    variance)."""
    probes = _probe_table(results, FIGURE_KINDS["depth"].statistics)
    first = probes[probes["iteration"] == probes["iteration"].min()]
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    fig = Figure(figsize=(13, 6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (
        ("grad_norm", "Weight gradients at initialization", "||dL/dW||^2", "Weight layer"),
        ("out_std", "Layer outputs (residual: the stream) at initialization", "variance", "Layer (residual: block)"),
    )
    for group in groups:
        group.banded = False  # means only: a band on a log scale of 10 decades says little
    for ax, (statistic, panel_title, unit, xlabel) in zip(axes, panels, strict=True):
        predictions = []
        for group in groups:
            mean = _layer_means(first, group, statistic) ** 2
            mean = mean[mean > 0]  # SkipInit's branch gradients are exactly 0 at initialization
            if mean.empty:
                continue
            label = group.label if statistic == "grad_norm" else None
            style = {"color": group.color, "linestyle": group.linestyle, "marker": group.marker or None}
            ax.plot(mean.index, mean.to_numpy(), markersize=4, label=label, **style)
            prediction = _depth_prediction(results, group, statistic, mean)
            if prediction is not None:
                layers, values, text = prediction
                predictions += ax.plot(layers, values, color=group.color, linestyle=":", linewidth=2.5, alpha=0.7)
                predictions[-1].set_label(f"_{text}")  # in this panel's legend only (below)
        label_axes(ax, panel_title, xlabel, unit)
        ax.set_yscale("log")
        if predictions:
            ax.legend(predictions, [line.get_label()[1:] for line in predictions], fontsize=9, loc="upper left",
                      title="predictions (dotted)", frameon=False)  # fmt: skip
    default_title = f"{results.name}: gradients and outputs against depth at initialization"
    finish_figure(fig, results, title or default_title, axes[0], groups)
    return fig


def angular_figure(results: ExperimentResults, layers: list[int] | None = None, title: str | None = None) -> Figure:
    """Weight decay's angular equilibrium: per chosen layer (default: the first), the angle of each
    recorded update (top) and the effective learning rate (bottom, log scale) over training, a line
    per run group (mean +- std over seeds); dotted, the equilibrium sqrt(2 lr reg / (1 + momentum))
    of every group trained by SGD (with or without momentum) with reg > 0."""
    probes = _probe_table(results, FIGURE_KINDS["angular"].statistics)
    layers = layers or [int(probes["layer"].min())]
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    fig = Figure(figsize=(4.8 * len(layers) + 1.5, 7.5), layout="constrained")
    axes = fig.subplots(2, len(layers), sharex=True, squeeze=False)
    for col, layer in enumerate(layers):
        for group in groups:
            label = group.label if col == 0 else None
            _draw_probe(axes[0, col], probes, group, layer, "update_angle", label=label)
            _draw_probe(axes[1, col], probes, group, layer, "effective_lr")
            equilibrium = angular_equilibrium(results, group)
            if equilibrium is not None:
                axes[0, col].axhline(equilibrium, color=group.color, linestyle=":", linewidth=2.5, alpha=0.8)
        label_axes(axes[0, col], f"Layer {layer}", None, "angle per update (rad)" if col == 0 else "")
        label_axes(axes[1, col], "", "Iteration", "lr / ||W||^2" if col == 0 else "")
        axes[1, col].set_yscale("log")
    default_title = f"{results.name}: angular updates (dotted: the equilibrium under weight decay)"
    finish_figure(fig, results, title or default_title, axes[0, 0], groups)
    return fig


def variance_shift_figure(results: ExperimentResults, layers: list[int] | None = None, title=None) -> Figure:
    """Dropout's variance shift (Li et al. 2019): per chosen layer (default: every recorded one), the
    ratio of the training-time to the dropout-free variance of its input to the normalization over
    training, measured (solid, mean +- std over seeds) and by the formula (dotted), a colour per group."""
    probes = _probe_table(results, FIGURE_KINDS["variance_shift"].statistics)
    layers = layers or sorted(int(layer) for layer in probes["layer"].unique())
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    fig = Figure(figsize=(4.8 * len(layers) + 1.5, 4.5), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers, strict=True):
        for group in groups:
            _draw_probe(ax, probes, group, layer, "shift_measured", label=group.label if layer == layers[0] else None)
            predicted = _probe_mean(probes, group, layer, "shift_predicted")
            ax.plot(predicted.index, predicted["mean"], color=group.color, linestyle=":", linewidth=2.5, alpha=0.8)
        label_axes(ax, f"Layer {layer}", "Iteration", "training / dropout-free variance" if layer == layers[0] else "")
    default_title = f"{results.name}: dropout's variance shift before the normalizations (dotted: the formula)"
    finish_figure(fig, results, title or default_title, axes[0], groups)
    return fig


def angular_equilibrium(results: ExperimentResults, group: RunGroup) -> float | None:
    """sqrt(2 lr reg / (1 + momentum)) for a group trained by sgd or sgd_momentum (momentum 0.9
    unless set) with reg > 0 (Wan et al. 2021), else None."""
    rule = _run_value(results, group, "solver.update_rule") or "sgd"
    reg = float(_run_value(results, group, "model.reg") or 0.0)
    if rule not in ("sgd", "sgd_momentum") or reg <= 0:
        return None
    config = {key: _run_value(results, group, f"solver.optim_config.{key}") for key in OPTIM_DEFAULTS[rule]}
    config = {**OPTIM_DEFAULTS[rule], **{key: float(v) for key, v in config.items() if v is not None}}
    return math.sqrt(2 * config["learning_rate"] * reg / (1 + config.get("momentum", 0.0)))


def _run_value(results: ExperimentResults, group: RunGroup, key: str):
    """A dotted spec key's value for the group: its swept value, else the spec's (None if unset)."""
    if key in group.runs.columns:
        value = group.runs[key].iloc[0]
        return None if is_nan(value) or value == "none" else value
    value = results.spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _layer_means(probes: pd.DataFrame, group: RunGroup, statistic: str) -> pd.Series:
    """The statistic per layer (index), mean over the group's runs."""
    rows = probes[(probes["statistic"] == statistic) & probes["run_id"].isin(group.runs["run_id"])]
    return rows.groupby("layer")["value"].mean().sort_index()


def _depth_prediction(results: ExperimentResults, group: RunGroup, statistic: str, mean: pd.Series):
    """(layers, values, legend text) of the theory's line for this group and panel, or None."""
    residual = _run_value(results, group, "model.residual")
    normalization = _run_value(results, group, "model.normalization")
    skipinit = str(_run_value(results, group, "model.skipinit")).lower() == "true"
    activation = _run_value(results, group, "model.activation") or "relu"
    layers = mean.index.to_numpy()
    if activation != "relu" or len(layers) < 3:
        return None
    if statistic == "grad_norm" and residual is None and normalization == "batchnorm":
        hidden = layers[:-1]  # the output layer's gradient does not pass a batch norm
        anchor = hidden[-1]
        measured = growth_factor(hidden[1:], mean.loc[hidden[1:]].to_numpy())
        values = mean.loc[anchor] * YANG_FACTOR ** (anchor - hidden)
        return hidden, values, f"Yang et al.: x{YANG_FACTOR:.3f}/layer (measured x{measured:.3f})"
    if statistic == "out_std" and residual is None and normalization is None:
        if _run_value(results, group, "model.weight_standardization") == "scaled":
            return layers, np.full(len(layers), mean.iloc[0]), "Brock et al.: constant with depth (scaled WS)"
    if statistic == "out_std" and residual == "pre" and not skipinit:
        if normalization is None:
            return layers, mean.iloc[0] * 2.0 ** (layers - layers[0]), "De & Smith: doubling per block"
        if normalization == "batchnorm":
            return layers, 1.0 + layers, "De & Smith: 1 + l"
    return None


def _probe_table(results: ExperimentResults, statistics: tuple[str, ...]) -> pd.DataFrame:
    probes = results.probes[results.probes["statistic"].isin(statistics)]
    if probes.empty:
        raise ResultsError(
            f"{results.path}: no {', '.join(statistics)} in the runs' probes.csv; add a record: section to the "
            f"spec and rerun it."
        )
    return probes


def _spread(layers: list[int]) -> list[int]:
    """At most MAX_DEFAULT_LAYERS layers: the first, the middle and the last."""
    if len(layers) <= MAX_DEFAULT_LAYERS:
        return [int(v) for v in layers]
    return [int(layers[0]), int(layers[len(layers) // 2]), int(layers[-1])]


def _probe_series(probes: pd.DataFrame, run_id: str, layer: int, statistic: str) -> pd.Series:
    rows = probes[(probes["run_id"] == run_id) & (probes["layer"] == layer) & (probes["statistic"] == statistic)]
    return pd.Series(rows["value"].to_numpy(), index=rows["iteration"].to_numpy())


def _probe_mean(probes: pd.DataFrame, group: RunGroup, layer: int, statistic: str) -> pd.DataFrame:
    """Mean and std over the group's done runs (or all its runs when none is done)."""
    done = group.runs.loc[group.runs["status"] == "done", "run_id"]
    run_ids = done if len(done) else group.runs["run_id"]
    return mean_std([_probe_series(probes, r, layer, statistic) for r in run_ids])


def _draw_probe(ax: Axes, probes: pd.DataFrame, group: RunGroup, layer: int, statistic: str, label=None) -> None:
    series_of = lambda r: _probe_series(probes, r, layer, statistic)  # noqa: E731
    mark_diverged(ax, draw_group(ax, group, series_of, label, markers=False))


def _log_if_spread(ax: Axes, probes: pd.DataFrame, statistic: str) -> None:
    values = probes.loc[probes["statistic"] == statistic, "value"].to_numpy(dtype=float)
    if log_spaced(values):
        ax.set_yscale("log")


# --- the draw function of each figure kind (bnlab.spec.figure_kinds.FIGURE_KINDS) -------------------


def _stem(kind: str, **fill: str) -> str:
    return FIGURE_KINDS[kind].stem.format(**fill)


DRAW = {  # kind -> draw(results, plot entry) -> [(file stem, Figure)]
    "history": lambda results, plot: [(_stem("history"), history_figure(results, plot.get("title")))],
    "sweep": lambda results, plot: [
        (_stem("sweep", x=plot["x"].replace(".", "_")), sweep_figure(results, plot["x"], plot.get("title")))
    ],
    "batch_size": lambda results, plot: [
        (_stem("batch_size", normalization=norm), fig)
        for norm, fig in batch_size_figures(results, plot.get("title")).items()
    ],
    "activations": lambda results, plot: [
        (_stem("activations"), activations_figure(results, plot.get("layers"), plot.get("title")))
    ],
    "ics": lambda results, plot: [(_stem("ics"), ics_figure(results, plot.get("layers"), plot.get("title")))],
    "landscape": lambda results, plot: [(_stem("landscape"), landscape_figure(results, plot.get("title")))],
    "depth": lambda results, plot: [(_stem("depth"), depth_figure(results, plot.get("title")))],
    "angular": lambda results, plot: [
        (_stem("angular"), angular_figure(results, plot.get("layers"), plot.get("title")))
    ],
    "variance_shift": lambda results, plot: [
        (_stem("variance_shift"), variance_shift_figure(results, plot.get("layers"), plot.get("title")))
    ],
}
