"""Figures of an experiment, drawn from its results folder only (see bnlab.results).

Figure kinds, as listed in spec.yaml `plots` (or chosen from the swept keys when it has none):
    history     training loss per iteration, training and validation accuracy per epoch; one line
                per run group                                       -> history.<format>
    sweep       best validation accuracy, best training accuracy and final training loss against
                the swept numeric key x (log axis when log-spaced); one line per group of the other
                swept keys                                          -> sweep_<x, dots as _>.<format>
    batch_size  training and validation accuracy per epoch, one line per batch size, one figure per
                normalization with the 'none' runs as reference     -> batch_size_<normalization>.<format>
    activations the 15th/50th/85th percentiles of hidden layers' nonlinearity inputs over training
                (Ioffe & Szegedy 2015, Fig. 1(b, c)), a panel per run group and layer (`layers`,
                default the first, a middle and the last)           -> activations.<format>
    ics         internal covariate shift (Santurkar et al. 2018, Def. 2.1): l2 and cosine over
                training, a column per layer (`layers`), a line per run group   -> ics.<format>
    landscape   loss range, gradient change and beta-smoothness along the gradient over training
                (Santurkar et al. 2018, Fig. 4), a line per run group          -> landscape.<format>
                The last three need the statistics recorded (a `record:` section in the spec).

Conventions in every figure:
  - A run group is the runs sharing every swept value but the seed. With several seeds a line is
    the mean over the seeds that reach that point, with a band of +-1 std across them (bands and
    markers are left out when there are more than 10 lines: they would only blur together).
  - Looks follow the notebooks: 'none' runs dashed with triangles, normalized runs solid with
    circles; the colour tells the other swept values (batchnorm and none at batch size 5 share one).
  - Loss per iteration is noisy: each run's loss is smoothed by a centred moving average over one
    epoch of iterations. With one or two single-seed groups the raw loss is also drawn faintly
    behind (more raw curves would only hide each other); several seeds show the mean +- std of the
    smoothed curves. The loss axis of history figures keeps to the bulk of the data (huge early or
    diverging losses are clipped), so the curves stay readable; the final-loss panel of sweep
    figures turns logarithmic instead when the losses span orders of magnitude, hiding none.
  - Diverged runs are marked with an 'x': where their curve stops in history figures, at the top
    of the axis in sweep figures (where they are left out of the mean lines); the title says how
    many there are. Failed and pending runs are not drawn; the title says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from bnlab.errors import ResultsError, SpecError
from bnlab.lab.atomic import atomic_file
from bnlab.lab.choices import FigureFormat
from bnlab.lab.figure_kinds import BATCH, FIGURE_KINDS
from bnlab.lab.formatting import format_value
from bnlab.lab.results import ExperimentResults, load_experiment, read_claims
from bnlab.nn.probes import growth_factor

FORMATS = tuple(f.value for f in FigureFormat)
PLOT_KINDS = tuple(FIGURE_KINDS)
PLOT_KEYS = ("kind", "x", "title", "layers")  # as bnlab.lab.spec resolves them (x, layers: null where unused)
YANG_FACTOR = math.pi / (math.pi - 1)  # Yang et al. 2019: BN ReLU nets, squared gradient norm per layer
MAX_DEFAULT_LAYERS = 3  # without `layers`, probe figures show the first, a middle and the last layer
NORM = "model.normalization"
AXIS_NAMES = {"model.weight_scale": "Weight initialization scale"}
MAX_RAW_GROUPS = 2  # the raw loss is drawn behind the moving average only for this few groups
MAX_DETAILED_GROUPS = 10  # beyond this many lines, std bands and markers only make a blur
DIVERGED_STYLE = {"marker": "x", "markersize": 9, "markeredgewidth": 2.2, "linestyle": "none"}


def plot_experiment(
    path: str | Path, formats: Sequence[str] = ("png",), out_dir: str | Path | None = None
) -> list[Path]:
    """Writes every declared (or chosen) figure of results folder `path` to out_dir (default
    <path>/figures/), one file per figure and format; returns the written paths in order."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise SpecError(f"figure format(s) {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}.")
    results = load_experiment(path)
    figures = build_figures(results)
    out_dir = Path(out_dir) if out_dir is not None else results.path / "figures"
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultsError(f"{out_dir}: is a file, not a folder; move it away, or draw the figures with --out FOLDER")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [_save(figure, out_dir / f"{stem}.{fmt}", fmt) for stem, figure in figures for fmt in formats]
    except OSError as err:  # a read-only results folder, a file where the folder should be, a full disk
        raise ResultsError(
            f"{out_dir}: cannot write the figures there ({err.strerror}); make {out_dir} writable for you, "
            f"or draw them elsewhere with --out FOLDER"
        ) from None


def build_figures(results: ExperimentResults) -> list[tuple[str, Figure]]:
    """(file name without extension, Figure) for every figure of the plan, in its order."""
    return [(stem, figure) for stem, figure, _ in drawn_figures(results)]


def drawn_figures(results: ExperimentResults) -> list[tuple[str, Figure, dict]]:
    """(file name without extension, Figure, its plan entry) for every figure of the plan, in its order."""
    if not results.runs["status"].isin(["done", "diverged"]).any():
        raise ResultsError(
            f"{results.path / 'runs.csv'}: no finished runs to plot yet; run `bnlab run SPEC` (it resumes)."
        )
    figures = [(stem, fig, plot) for plot in figure_plan(results) for stem, fig in DRAW[plot["kind"]](results, plot)]
    named, seen = [], {}
    for stem, fig, plot in figures:  # two declared plots of one kind would share a file name: number repeats
        seen[stem] = seen.get(stem, 0) + 1
        named.append((stem if seen[stem] == 1 else f"{stem}_{seen[stem]}", fig, plot))
    return named


def caption(plot: dict) -> str:
    """What a figure of this plan entry shows (FIGURE_KINDS' caption, its x axis named)."""
    return FIGURE_KINDS[plot["kind"]].caption.format(x=axis_name(plot["x"]).lower() if plot.get("x") else "")


def figure_plan(results: ExperimentResults) -> list[dict]:
    """The spec's `plots` entries, checked; without them: a history figure, a sweep figure per swept
    numeric key with more than 3 distinct values, a batch_size figure if the batch size is swept."""
    declared = results.spec.get("plots")
    if declared is None:
        plan = [{"kind": "history"}]
        plan += [{"kind": "sweep", "x": key} for key in results.swept_keys if _sweepable(results, key)]
        if BATCH in results.swept_keys:
            plan.append({"kind": "batch_size"})
        recorded = set(results.probes["statistic"])
        probed = [
            k
            for k, kind in FIGURE_KINDS.items()
            if kind.statistics and not kind.declared_only and recorded >= set(kind.statistics)
        ]
        plan += [{"kind": k} for k in probed]
        return plan
    spec_file = results.path / "spec.yaml"
    if not isinstance(declared, list):
        raise ResultsError(
            f"{spec_file}: plots must be a list of mappings, each with a kind ({', '.join(PLOT_KINDS)})."
        )
    for i, plot in enumerate(declared):
        where = f"{spec_file}: plots[{i}]"
        if not isinstance(plot, dict) or plot.get("kind") not in PLOT_KINDS:
            raise ResultsError(f"{where}: expected a mapping with kind one of {', '.join(PLOT_KINDS)}.")
        unknown = sorted(set(plot) - set(PLOT_KEYS))
        if unknown:
            raise ResultsError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(PLOT_KEYS)}).")
        if plot.get("title") is not None and not isinstance(plot["title"], str):
            raise ResultsError(f"{where}: title must be text.")
        kind = FIGURE_KINDS[plot["kind"]]
        if kind.takes_x and not (plot.get("x") in results.swept_keys and _numeric(results, plot["x"])):
            numeric = ", ".join(k for k in results.swept_keys if _numeric(results, k)) or "none is swept"
            raise ResultsError(f"{where}: x is {plot.get('x')!r}; expected a swept numeric key ({numeric}).")
        if kind.swept and kind.swept not in results.swept_keys:
            raise ResultsError(f"{where}: a {plot['kind']} plot needs {kind.swept} in the sweep.")
        missing = [s for s in kind.statistics if s not in set(results.probes["statistic"])]
        if missing:
            raise ResultsError(
                f"{where}: the {plot['kind']} figure needs {', '.join(missing)} in the runs' probes.csv; "
                f"record them (record.statistics in the spec) and rerun with --force."
            )
        layers = plot.get("layers")
        if layers is not None and not (
            kind.takes_layers
            and isinstance(layers, list)
            and layers
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in layers)
        ):
            raise ResultsError(f"{where}: layers must be a list of layer numbers (1, 2, ...), for activations or ics.")
    return declared


def history_figure(results: ExperimentResults, title: str | None = None) -> Figure:
    """Training loss per iteration (top), training and validation accuracy per epoch (bottom)."""
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplot_mosaic([["loss", "loss"], ["train", "val"]])
    groups = _groups(results, _finished(results), results.swept_keys)
    by_run = dict(tuple(results.history.groupby("run_id")))
    history = {r: by_run.get(r, results.history.iloc[:0]) for r in results.runs["run_id"]}
    diverged: dict[str, list] = {"loss": [], "train": [], "val": []}  # (x, y, colour) per panel
    lows, peaks = [], []  # per run: lowest and typical highest smoothed loss, for the y-range
    for group in groups:
        window = _window([history[r] for r in group.runs["run_id"]])
        if len(group.runs) == 1 and len(groups) <= MAX_RAW_GROUPS:
            raw = history[group.runs["run_id"].iloc[0]]
            raw = raw[np.isfinite(raw["loss"])]
            axes["loss"].plot(raw["iteration"], raw["loss"], color=group.color, alpha=0.25, linewidth=0.6)
            if group.runs["status"].iloc[0] == "done":  # the y-range takes in the bulk of its noise
                lows.append(raw["loss"].min())
                peaks.append(np.percentile(raw["loss"], 99))
        smoothed = {r: _smoothed_loss(history[r], window) for r in group.runs["run_id"]}
        diverged["loss"] += _draw_group(axes["loss"], group, smoothed.__getitem__, None, markers=False)
        group_lows, group_peaks = _loss_levels(group, smoothed)
        lows += group_lows
        peaks += group_peaks
        for panel, column in (("train", "train_acc"), ("val", "val_acc")):
            label = group.label if panel == "train" else None
            diverged[panel] += _draw_group(axes[panel], group, lambda r, c=column: _epoch_series(results, r, c), label)
    _set_robust_ylim(axes["loss"], min(lows, default=0.0), np.array(peaks))
    _label(axes["loss"], "Training loss (moving average over one epoch)", "Iteration", "Loss")
    _label(axes["train"], "Training accuracy", "Epoch", "Accuracy")
    _label(axes["val"], "Validation accuracy", "Epoch", "Accuracy")
    for panel, points in diverged.items():
        _mark_diverged(axes[panel], points)
    for panel in ("train", "val"):
        axes[panel].xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(fig, results, title or f"{results.name}: training history", axes["train"], groups)
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
        _label(ax, panel_title, None, unit)
    return fig, axes


def sweep_figure(results: ExperimentResults, x: str, title: str | None = None) -> Figure:
    """Best val accuracy, best train accuracy and final training loss against swept key x; one line
    per group of the other swept keys. Diverged runs are left out of the lines (a gap where all
    seeds diverged) and drawn as an 'x' at the top of each panel at their x."""
    runs = _finished(results).dropna(subset=[x])
    groups = _groups(results, runs, [k for k in results.swept_keys if k != x])
    fig, axes = _panel_column(SWEEP_PANELS)
    for ax, metric in zip(axes, SWEEP_PANELS, strict=True):
        for group in groups:
            done = group.runs[group.runs["status"] == "done"]
            stats = done.groupby(x)[metric].agg(["mean", "std"]).fillna({"std": 0.0})
            stats = stats.reindex(sorted(group.runs[x].unique()))
            _draw_curve(ax, stats, group, group.label, markers=True, band=group.banded and group.seeds > 1)
        if metric == "final_train_loss":
            losses = runs.loc[runs["status"] == "done", metric].to_numpy(dtype=float)
            losses = losses[np.isfinite(losses)]
            if _log_spaced(losses):  # exploding losses span orders of magnitude: show them all
                ax.set_yscale("log")
            else:
                _set_robust_ylim(ax, np.nanmin(losses, initial=np.inf), losses)
        diverged = [(v, math.nan, g.color) for g in groups for v in g.runs.loc[g.runs["status"] == "diverged", x]]
        _mark_diverged(ax, diverged)
    if _log_spaced(runs[x].to_numpy(dtype=float)):
        axes[-1].set_xscale("log")
    axes[-1].set_xlabel(axis_name(x))
    _finish(fig, results, title or f"{results.name}: effect of {axis_name(x).lower()}", axes[0], groups)
    return fig


def batch_size_figures(results: ExperimentResults, title: str | None = None) -> dict[str, Figure]:
    """Training and validation accuracy per epoch for each batch size: one figure per
    normalization, keyed by its name, each also showing the 'none' runs (dashed) as the reference."""
    runs = _finished(results)
    if NORM not in results.swept_keys:  # one normalization for the whole experiment
        norm = _norm_name((results.spec.get("model") or {}).get("normalization"))
        return {norm: _batch_size_figure(results, runs, norm, title)}
    norms = [n for n in dict.fromkeys(runs[NORM]) if n != "none"] or ["none"]
    return {norm: _batch_size_figure(results, runs[runs[NORM].isin([norm, "none"])], norm, title) for norm in norms}


def _batch_size_figure(results: ExperimentResults, runs: pd.DataFrame, norm: str, title: str | None) -> Figure:
    fig = Figure(figsize=(9, 8.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    groups = _groups(results, runs, results.swept_keys)
    what = "normalization none" if norm == "none" else norm  # "batch size and none" would not read
    for ax, column, name in zip(axes, ("train_acc", "val_acc"), ("Training", "Validation"), strict=True):
        diverged = []
        for group in groups:
            diverged += _draw_group(ax, group, lambda r, c=column: _epoch_series(results, r, c), group.label)
        _label(ax, f"{name} accuracy ({what})", None, "Accuracy")
        _mark_diverged(ax, diverged)
    axes[-1].set_xlabel("Epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(fig, results, title or f"{results.name}: batch size and {what}", axes[0], groups)
    return fig


def activations_figure(results: ExperimentResults, layers: list[int] | None = None, title: str | None = None) -> Figure:
    """The BN paper's Figure 1(b, c): the 15th, 50th and 85th percentiles of a hidden layer's
    nonlinearity inputs over training, a panel per run group (columns) and chosen layer (rows);
    with several seeds each percentile is the mean over them."""
    probes = _probe_table(results, FIGURE_KINDS["activations"].statistics)
    layers = layers or _spread(sorted(probes.loc[probes["layer"] > 0, "layer"].unique()))
    groups = _groups(results, _finished(results), results.swept_keys)
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
            _mark_diverged(ax, stops)
            _label(ax, f"{group.label}, layer {layer}", "Iteration" if row == len(layers) - 1 else None,
                   "Nonlinearity input" if col == 0 else "")  # fmt: skip
    _finish(fig, results, title or f"{results.name}: distribution of the nonlinearity inputs over training",
            axes[0, 0], groups)  # fmt: skip
    return fig


def ics_figure(results: ExperimentResults, layers: list[int] | None = None, title: str | None = None) -> Figure:
    """Santurkar et al.'s internal covariate shift over training: the l2 distance (top) and the
    cosine (bottom) between a layer's gradient before and after the layers below it are updated;
    a column per chosen layer, a line per run group (mean +- std over seeds)."""
    probes = _probe_table(results, FIGURE_KINDS["ics"].statistics)
    layers = layers or _spread(sorted(probes.loc[probes["statistic"] == "ics_l2", "layer"].unique()))
    groups = _groups(results, _finished(results), results.swept_keys)
    fig = Figure(figsize=(4.2 * len(layers) + 1, 7.5), layout="constrained")
    axes = fig.subplots(2, len(layers), sharex=True, squeeze=False)
    rows = (("ics_l2", "||G - G'|| (l2 difference)"), ("ics_cos", "cos(G, G')"))
    for col, layer in enumerate(layers):
        for row, (statistic, unit) in enumerate(rows):
            ax = axes[row, col]
            for group in groups:
                _draw_probe(ax, probes, group, layer, statistic, label=group.label if row == col == 0 else None)
            _label(ax, f"Layer {layer}", "Iteration" if row == 1 else None, unit if col == 0 else "")
            if statistic == "ics_l2":
                _log_if_spread(ax, probes, statistic)
    _finish(fig, results, title or f"{results.name}: internal covariate shift (Santurkar et al., Def. 2.1)",
            axes[0, 0], groups)  # fmt: skip
    return fig


def landscape_figure(results: ExperimentResults, title: str | None = None) -> Figure:
    """Santurkar et al.'s Figure 4 measures along the gradient over training: the range of the loss,
    the largest change of the gradient (predictiveness) and the effective beta-smoothness; a line
    per run group (mean +- std over seeds), log axes where the values span two decades or more."""
    probes = _probe_table(results, FIGURE_KINDS["landscape"].statistics)
    groups = _groups(results, _finished(results), results.swept_keys)
    fig, axes = _panel_column(LANDSCAPE_PANELS)
    for ax, statistic in zip(axes, LANDSCAPE_PANELS, strict=True):
        for group in groups:
            _draw_probe(ax, probes, group, 0, statistic, label=group.label if statistic == "loss_range" else None)
        _log_if_spread(ax, probes, statistic)
    axes[-1].set_xlabel("Iteration")
    _finish(fig, results, title or f"{results.name}: loss landscape along the gradient", axes[0], groups)
    return fig


def depth_figure(results: ExperimentResults, title: str | None = None) -> Figure:
    """At initialization (the first recorded iteration), against the layer: the squared norm of
    each weight gradient (left) and the variance of each layer's output, for residual nets of the
    stream after each block (right); a line per run group (mean over seeds), log scale. Beside them,
    dotted, the predictions: for plain batch-norm nets Yang et al.'s growth by pi/(pi - 1) per layer
    towards the input (anchored at the last hidden layer); for pre-activation residual streams
    De & Smith's doubling per block without normalization (anchored at block 1) and 1 + l with
    batch norm (the stem's batch norm gives the stream unit variance)."""
    probes = _probe_table(results, FIGURE_KINDS["depth"].statistics)
    first = probes[probes["iteration"] == probes["iteration"].min()]
    groups = _groups(results, _finished(results), results.swept_keys)
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
        _label(ax, panel_title, xlabel, unit)
        ax.set_yscale("log")
        if predictions:
            ax.legend(predictions, [line.get_label()[1:] for line in predictions], fontsize=9, loc="upper left",
                      title="predictions (dotted)", frameon=False)  # fmt: skip
    _finish(fig, results, title or f"{results.name}: gradients and outputs against depth at initialization", axes[0],
            groups)  # fmt: skip
    return fig


def _layer_means(probes: pd.DataFrame, group: _Group, statistic: str) -> pd.Series:
    """The statistic per layer (index), mean over the group's runs."""
    rows = probes[(probes["statistic"] == statistic) & probes["run_id"].isin(group.runs["run_id"])]
    return rows.groupby("layer")["value"].mean().sort_index()


def _model_value(results: ExperimentResults, group: _Group, key: str):
    """A model option of the group: its swept value, else the spec's."""
    column = f"model.{key}"
    if column in group.runs.columns:
        value = group.runs[column].iloc[0]
        return None if _is_nan(value) or value == "none" else value
    model = results.spec.get("model")
    return model.get(key) if isinstance(model, dict) else None


def _depth_prediction(results: ExperimentResults, group: _Group, statistic: str, mean: pd.Series):
    """(layers, values, legend text) of the theory's line for this group and panel, or None."""
    residual = _model_value(results, group, "residual")
    normalization = _model_value(results, group, "normalization")
    skipinit = str(_model_value(results, group, "skipinit")).lower() == "true"
    activation = _model_value(results, group, "activation") or "relu"
    layers = mean.index.to_numpy()
    if activation != "relu" or len(layers) < 3:
        return None
    if statistic == "grad_norm" and residual is None and normalization == "batchnorm":
        hidden = layers[:-1]  # the output layer's gradient does not pass a batch norm
        anchor = hidden[-1]
        measured = growth_factor(hidden[1:], mean.loc[hidden[1:]].to_numpy())
        values = mean.loc[anchor] * YANG_FACTOR ** (anchor - hidden)
        return hidden, values, f"Yang et al.: x{YANG_FACTOR:.3f}/layer (measured x{measured:.3f})"
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


def _probe_mean(probes: pd.DataFrame, group: _Group, layer: int, statistic: str) -> pd.DataFrame:
    """Mean and std over the group's done runs (or all its runs when none is done)."""
    done = group.runs.loc[group.runs["status"] == "done", "run_id"]
    run_ids = done if len(done) else group.runs["run_id"]
    return _mean_std([_probe_series(probes, r, layer, statistic) for r in run_ids])


def _draw_probe(ax: Axes, probes: pd.DataFrame, group: _Group, layer: int, statistic: str, label=None) -> None:
    series_of = lambda r: _probe_series(probes, r, layer, statistic)  # noqa: E731
    _mark_diverged(ax, _draw_group(ax, group, series_of, label, markers=False))


def _log_if_spread(ax: Axes, probes: pd.DataFrame, statistic: str) -> None:
    values = probes.loc[probes["statistic"] == statistic, "value"].to_numpy(dtype=float)
    if _log_spaced(values):
        ax.set_yscale("log")


# --- run groups and their labels ---------------------------------------------------------------


@dataclass
class _Group:
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


def _finished(results: ExperimentResults) -> pd.DataFrame:
    """The runs that have curves to draw: done and diverged."""
    return results.runs[results.runs["status"].isin(["done", "diverged"])]


def _groups(results: ExperimentResults, runs: pd.DataFrame, keys: list[str]) -> list[_Group]:
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
    parts = [({k: None if _is_nan(v) else v for k, v in values.items()}, g) for values, g in parts]
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
        groups.append(_Group(label, runs_of_group, color, linestyle, marker, banded=detailed))
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
            parts.append(f"{key.rsplit('.', 1)[-1].replace('_', ' ')} {value}")
    return ", ".join(parts) or _fixed_label(results)


def _fixed_label(results: ExperimentResults) -> str:
    """Label of the one group of an experiment without other swept keys: its normalization."""
    model = results.spec.get("model")
    if isinstance(model, dict) and "normalization" in model:
        return _norm_name(model["normalization"])
    return results.name


def _norm_name(value) -> str:
    return "none" if value is None else str(value)


def axis_name(key: str) -> str:
    return AXIS_NAMES.get(key, key.rsplit(".", 1)[-1].replace("_", " ").capitalize())


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_nan(value) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _numeric(results: ExperimentResults, key: str) -> bool:
    column = results.runs[key]
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _sweepable(results: ExperimentResults, key: str) -> bool:
    return _numeric(results, key) and results.runs[key].nunique() > 3


def _log_spaced(values: np.ndarray) -> bool:
    """All positive and spanning at least two decades."""
    values = values[np.isfinite(values)]
    return values.size > 0 and values.min() > 0 and values.max() / values.min() >= 100


def _colors(n: int) -> list:
    """Distinct colours: tab10 for up to 10 lines, else evenly spaced along viridis."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](v) for v in np.linspace(0, 0.95, n)]


# --- curves -----------------------------------------------------------------------------------


def _window(histories: list[pd.DataFrame]) -> int:
    """Iterations per epoch (the longest epoch seen), at most a fifth of the run so it stays visible."""
    per_epoch = max((h.groupby("epoch").size().max() for h in histories if len(h)), default=1)
    longest = max((len(h) for h in histories), default=1)
    return int(max(1, min(per_epoch, longest // 5)))


def _smoothed_loss(history: pd.DataFrame, window: int) -> pd.Series:
    """Centred moving average of one run's loss, indexed by iteration; nan and inf losses are left
    out of the averages, so a diverged run's curve runs up to the iteration where it stopped."""
    loss = history["loss"].where(np.isfinite(history["loss"]))
    smooth = loss.rolling(window, center=True, min_periods=1).mean()
    return pd.Series(smooth.to_numpy(), index=history["iteration"].to_numpy())


def _loss_levels(group: _Group, smoothed: dict[str, pd.Series]) -> tuple[list[float], list[float]]:
    """Lowest and highest points of a group's smoothed loss curves (and std band), for the y-range.
    A diverged run peaks where it explodes, so its median stands in for its peak."""
    lows, peaks = [], []
    done = [
        smoothed[r] for r, status in zip(group.runs["run_id"], group.runs["status"], strict=True) if status == "done"
    ]
    if group.banded and len(done) > 1:
        band = _mean_std(done)
        lows.append((band["mean"] - band["std"]).min())
        peaks.append((band["mean"] + band["std"]).max())
    for loss, status in zip(smoothed.values(), group.runs["status"], strict=True):
        if loss.notna().any():
            lows.append(loss.min())
            peaks.append(loss.max() if status == "done" else loss.median())
    return lows, peaks


def _epoch_series(results: ExperimentResults, run_id: str, column: str) -> pd.Series:
    rows = results.epochs[results.epochs["run_id"] == run_id]
    return pd.Series(rows[column].to_numpy(), index=rows["epoch"].to_numpy())


def _mean_std(series: list[pd.Series]) -> pd.DataFrame:
    """Mean and std (0 for one run) across runs at each x, over the runs that reach that x."""
    stacked = pd.concat(series, axis=1) if series else pd.DataFrame()
    return pd.DataFrame({"mean": stacked.mean(axis=1), "std": stacked.std(axis=1).fillna(0.0)}).sort_index()


# --- drawing ----------------------------------------------------------------------------------


def _draw_group(ax: Axes, group: _Group, series_of, label: str | None, markers: bool = True) -> list[tuple]:
    """Draws the mean over the group's done runs (with a +-std band if several) and each diverged
    run on its own, thinner, ending where it stopped. series_of(run_id) gives a run's y indexed
    by x. Returns the (x, y, colour) where the diverged runs stopped, to be marked with an 'x'."""
    done = group.runs.loc[group.runs["status"] == "done", "run_id"]
    if len(done):
        band = group.banded and len(done) > 1
        _draw_curve(ax, _mean_std([series_of(r) for r in done]), group, label, markers, band)
        label = None
    stops = []
    for run_id in group.runs.loc[group.runs["status"] == "diverged", "run_id"]:
        y = series_of(run_id)
        _draw_curve(ax, pd.DataFrame({"mean": y, "std": 0.0}), group, label, markers, band=False, linewidth=1.0)
        label = None  # a group whose seeds all diverged is labelled by its first run
        if len(y):  # (a run that diverged at once has no curve to mark; the title still counts it)
            stops.append((y.index[-1], y.iloc[-1], group.color))
    return stops


def _draw_curve(
    ax: Axes, curve: pd.DataFrame, group: _Group, label: str | None, markers: bool, band: bool, linewidth=1.8
) -> None:
    """curve: 'mean' and 'std' columns indexed by x."""
    x = curve.index.to_numpy(dtype=float)
    marker = {"marker": group.marker, "markersize": 4} if markers and group.marker else {}
    ax.plot(x, curve["mean"], color=group.color, linestyle=group.linestyle, linewidth=linewidth, label=label, **marker)
    if band:
        low, high = curve["mean"] - curve["std"], curve["mean"] + curve["std"]
        ax.fill_between(x, low, high, color=group.color, alpha=0.18, linewidth=0)


def _mark_diverged(ax: Axes, points: list[tuple]) -> None:
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


def _set_robust_ylim(ax: Axes, low: float, peaks: np.ndarray) -> None:
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


def _label(ax: Axes, title: str, xlabel: str | None, ylabel: str) -> None:
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _finish(fig: Figure, results: ExperimentResults, title: str, legend_ax: Axes, groups: list[_Group]) -> None:
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


def _save(fig: Figure, file: Path, fmt: str) -> Path:
    """Writes atomically: a temporary file in the same folder, then renamed over `file`."""
    with atomic_file(file) as f:
        fig.savefig(f, format=fmt, dpi=110)
    return file


# --- the draw function of each figure kind (bnlab.lab.figure_kinds.FIGURE_KINDS) -------------------


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
}


# --- claims (bnlab claims) ----------------------------------------------------------------------

VERDICT_COLORS = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}


def plot_claims(claims_root: str | Path, ids: Sequence[str] | None = None) -> list[Path]:
    """Draws claims_root/figures/<id>.png for every entry of claims_root/claims.json (or those in
    ids), as `bnlab claims` wrote it, <id>-cells.png (forest) and <id>-trend.png for a claim with
    cells, and scope.png over every claim with cells; returns the written paths."""
    everything = read_claims(claims_root)
    entries = [e for e in everything if ids is None or e["id"] in ids]
    out_dir = Path(claims_root) / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_save(claim_figure(entry), out_dir / f"{entry['id']}.png", "png") for entry in entries]
    paths += [
        _save(forest_figure(entry), out_dir / f"{entry['id']}-cells.png", "png")
        for entry in entries
        if len(entry.get("cells", [])) > 1
    ]
    paths += [
        _save(figure, out_dir / f"{entry['id']}-trend.png", "png")
        for entry in entries
        if (figure := trend_figure(entry)) is not None
    ]
    scoped = [e for e in everything if e.get("cells")]
    if scoped:  # the overview shows the whole family, whichever claims were drawn now
        paths.append(_save(scope_figure(scoped), out_dir / "scope.png", "png"))
    return paths


def _cell_name(where: dict) -> str:
    from bnlab.lab.claims import cell_label

    return cell_label(where) or "own condition"


def forest_figure(entry: dict) -> Figure:
    """One row per cell of a claim: the mean difference a - b with its 95% t interval, coloured by
    the cell's adjusted verdict, 0 marked; the cell's adjusted p and seeds at the right."""
    cells = entry["cells"]
    fig = Figure(figsize=(8, 1.3 + 0.42 * len(cells)), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(cells))[::-1]
    for y, cell in zip(ys, cells, strict=True):
        color = VERDICT_COLORS[cell["verdict_adjusted"]]
        mean = cell["mean_diff"]
        ax.errorbar(
            [mean], [y], xerr=[[mean - cell["ci_low"]], [cell["ci_high"] - mean]], fmt="D", color=color, capsize=4
        )
        ax.annotate(
            f"p adj. {cell['p_adjusted']:.2g}, n {cell['n']}",
            (1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
        )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(ys, [_cell_name(c["where"]) for c in cells], fontsize=8)
    ax.set_ylim(-0.7, len(cells) - 0.3)
    for verdict, color in VERDICT_COLORS.items():
        ax.plot([], [], "D", color=color, label=verdict)
    ax.legend(loc="best", fontsize=7)
    claimed = ">" if entry["direction"] == "greater" else "<"
    xlabel = f"{entry['metric']}: a - b (claimed {claimed} 0), mean and 95% t interval"
    ax.xaxis.set_major_locator(MaxNLocator(6))
    values = np.array([v for c in cells for v in (c["ci_low"], c["mean_diff"], c["ci_high"])], dtype=float)
    size = np.abs(values[np.isfinite(values) & (values != 0)])
    if len(size) and size.max() > 100 * np.median(size):
        # A cell orders of magnitude off (a diverging net) would flatten every other row: the axis
        # spans the others, and a mean beyond it is written at the edge it lies past.
        typical = values[np.abs(values) <= 100 * np.median(size)]
        low, high = min(typical.min(), 0.0), max(typical.max(), 0.0)
        low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
        ax.set_xlim(low, high)
        for y, cell in zip(ys, cells, strict=True):
            mean = cell["mean_diff"]
            if not low <= mean <= high:
                edge, align, text = (low, "left", f"◀ {mean:+.3g}") if mean < low else (high, "right", f"{mean:+.3g} ▶")
                color = VERDICT_COLORS[cell["verdict_adjusted"]]
                ax.annotate(text, (edge, y), ha=align, va="bottom", fontsize=8, color=color)
    ax.set_xlabel(xlabel)
    counts = ", ".join(f"{len(entry['scope'][v])} {v}" for v in VERDICT_COLORS if entry["scope"].get(v))
    fig.suptitle(
        f"{entry['id']} ({entry['scope']['holds']}: {counts} of {len(cells)} cells)\n{entry['statement']}", fontsize=9
    )
    return fig


TRAINS_ABOVE = 0.15  # a net "trains" when its mean accuracy is above chance (0.1 for 10 classes) + 0.05


def trend_figure(entry: dict) -> Figure | None:
    """For a claim across a numeric condition with at least three values (a learning rate): the
    metric of both groups (mean ± std over seeds) against it, a panel per value of the other
    conditions, and the largest value at which each group's mean accuracy is above
    TRAINS_ABOVE (chance + 0.05) marked. None for a claim without such a condition."""
    cells = entry.get("cells") or []
    keys = list(cells[0]["where"]) if cells else []
    numeric = [
        k
        for k in keys
        if all(isinstance(c["where"][k], (int, float)) and not isinstance(c["where"][k], bool) for c in cells)
        and len({c["where"][k] for c in cells}) >= 3
    ]
    if not numeric:
        return None
    x_key = numeric[0]
    panels: dict[str, list[dict]] = {}
    for cell in cells:
        panels.setdefault(_cell_name({k: v for k, v in cell["where"].items() if k != x_key}), []).append(cell)
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    key = entry["key"].rsplit(".", 1)[-1]
    for ax, (title, group) in zip(axes, panels.items(), strict=True):
        group = sorted(group, key=lambda c: c["where"][x_key])
        xs = [c["where"][x_key] for c in group]
        for side, color in (("a", "tab:blue"), ("b", "tab:orange")):
            values = [np.array([p[side] for p in c["pairs"]]) for c in group]
            means = np.array([v.mean() for v in values])
            stds = np.array([v.std() for v in values])
            label = f"{key} = {format_value(entry[side])}"
            ax.plot(xs, means, "-o", color=color, label=label)
            ax.fill_between(xs, means - stds, means + stds, color=color, alpha=0.2)
            trains = [x for x, m in zip(xs, means, strict=True) if m > TRAINS_ABOVE]
            if trains and "acc" in entry["metric"]:
                ax.axvline(max(trains), color=color, linestyle=":", linewidth=1.5)
        if "acc" in entry["metric"]:
            ax.axhline(0.1, color="gray", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        _label(ax, title, x_key.rsplit(".", 1)[-1], entry["metric"])
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{entry['id']}: {entry['metric']} against {x_key.rsplit('.', 1)[-1]} (mean ± std over seeds); dotted: "
        f"the largest value where the mean is above {TRAINS_ABOVE} (chance 0.1, dashed)",
        fontsize=9,
    )
    return fig


def scope_figure(entries: list[dict]) -> Figure:
    """One page with every claim's scope: a row per claim, a square per cell coloured by its
    adjusted verdict, and where the claim holds in words."""
    import textwrap

    width = max(len(e["cells"]) for e in entries)
    fig = Figure(figsize=(11, 0.8 + 0.32 * len(entries)), layout="constrained")
    ax = fig.subplots()
    for row, entry in enumerate(entries):
        y = len(entries) - 1 - row
        for x, cell in enumerate(entry["cells"]):
            ax.add_patch(
                Rectangle((x + 0.08, y - 0.38), 0.84, 0.76, color=VERDICT_COLORS[cell["verdict_adjusted"]], linewidth=0)
            )
        ax.text(-0.3, y, entry["id"], ha="right", va="center", fontsize=8)
        text = textwrap.shorten(entry["scope"]["text"], 110, placeholder=" ...")
        ax.text(width + 0.3, y, text, ha="left", va="center", fontsize=7)
    ax.set_xlim(-4.5, width + 15)  # room for the ids at the left and the words at the right
    ax.set_ylim(-0.6, len(entries) - 0.4)
    ax.axis("off")
    for verdict, color in VERDICT_COLORS.items():
        ax.plot([], [], "s", color=color, label=verdict)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    ax.set_title(
        "Where each claim holds: a square per cell, coloured by its verdict after Holm's adjustment", fontsize=9
    )
    return fig


def claim_figure(entry: dict) -> Figure:
    """Left: the metric of the two groups for every seed, a line joining each pair. Right: the
    per-seed differences a - b, their mean and 95% t interval, and 0 (the verdict's reference)."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    key = entry["key"].rsplit(".", 1)[-1]
    labels = [f"{key} = {format_value(entry['a'])}", f"{key} = {format_value(entry['b'])}"]
    color = VERDICT_COLORS[entry["verdict"]]
    for pair in entry["pairs"]:
        left.plot([0, 1], [pair["a"], pair["b"]], "-o", color="tab:blue", alpha=0.6)
    left.set_xticks([0, 1], labels)
    left.set_xlim(-0.4, 1.4)
    _label(left, "per seed (lines join a seed's pair)", None, entry["metric"])
    diffs = [p["a"] - p["b"] for p in entry["pairs"]]
    jitter = np.linspace(-0.08, 0.08, len(diffs)) if len(diffs) > 1 else [0.0]
    right.plot(jitter, diffs, "o", color="tab:blue", alpha=0.6, label="a - b per seed")
    mean, low, high = entry["mean_diff"], entry["ci_low"], entry["ci_high"]
    right.errorbar(
        [0.3],
        [mean],
        yerr=[[mean - low], [high - mean]],
        fmt="D",
        color=color,
        capsize=8,
        markersize=8,
        label="mean, 95% t interval",
    )
    right.axhline(0, color="black", linewidth=1)
    right.set_xticks([])
    right.set_xlim(-0.3, 0.6)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    claimed = ">" if entry["direction"] == "greater" else "<"
    _label(right, f"claimed: a - b {claimed} 0", None, f"difference in {entry['metric']}")
    where = ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in entry["where"].items())
    fig.suptitle(
        f"{entry['id']}: {entry['verdict']} (n = {entry['n']}, p = {entry['p_value']:.2g})"
        f"{'  [' + where + ']' if where else ''}\n{entry['statement']}",
        fontsize=10,
        color=color if entry["verdict"] != "inconclusive" else "black",
    )
    return fig
