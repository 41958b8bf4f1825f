"""The figure kinds a spec's `plots` can name, one row each: what a kind needs of the results,
its file name and what it shows.

The spec checks a plan against this table before any run, bnlab.figures checks it again against
the results folder and draws each kind with its function in bnlab.figures.kinds.DRAW, and the report captions
each figure from it. A new kind is a row here and a draw function there.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH = "solver.batch_size"


@dataclass(frozen=True)
class FigureKind:
    """stem: the file name without extension ({x}: the swept key, dots as _; {normalization}: one
    figure per normalization). caption: what it shows ({x}: the x axis' name), completed in the
    report by the figure's own title and notes. statistics: the recorded statistics (probes.csv)
    it draws. swept: a key that must be swept. takes_x: it needs `x`, a swept numeric key.
    takes_layers: it accepts `layers`. declared_only: drawn only when a spec's `plots` names it,
    never chosen by default."""

    stem: str
    caption: str = ""
    statistics: tuple[str, ...] = ()
    swept: str | None = None
    takes_x: bool = False
    takes_layers: bool = False
    declared_only: bool = False


FIGURE_KINDS: dict[str, FigureKind] = {
    "history": FigureKind(
        "history",
        "Training loss per iteration (moving average over one epoch, top) and training and "
        "validation accuracy per epoch (bottom), a line per run group.",
    ),
    "sweep": FigureKind(
        "sweep_{x}",
        "Best validation accuracy, best training accuracy and final training loss (mean of the "
        "last 100 iterations) against {x}, a line per group of the other swept values.",
        takes_x=True,
    ),
    "batch_size": FigureKind(
        "batch_size_{normalization}",
        "Training and validation accuracy per epoch for each batch size; runs without "
        "normalization are drawn dashed as the reference.",
        swept=BATCH,
    ),
    "activations": FigureKind("activations", statistics=("p15", "p50", "p85"), takes_layers=True),
    "ics": FigureKind("ics", statistics=("ics_l2", "ics_cos"), takes_layers=True),
    "landscape": FigureKind("landscape", statistics=("loss_range", "grad_change", "beta_smoothness")),
    "depth": FigureKind(
        "depth",
        "At initialization (the first recorded iteration), against the layer: the squared norm of each "
        "weight gradient and the variance of each layer's output (for residual nets, of the stream after "
        "each block), a line per run group, with the predictions of Yang et al. 2019, Brock et al. 2021 "
        "and De & Smith 2020 dotted where one applies.",
        statistics=("grad_norm", "out_std"),
        declared_only=True,
    ),
    "angular": FigureKind(
        "angular",
        "Over training, for each chosen layer: the angle between its weights before and after each update "
        "(top) and its effective learning rate lr / ||W||^2 (bottom), a line per run group, with the "
        "equilibrium angle sqrt(2 lr reg / (1 + momentum)) of Wan et al. 2021 dotted for SGD with weight decay.",
        statistics=("update_angle", "effective_lr"),
        takes_layers=True,
        declared_only=True,
    ),
    "variance_shift": FigureKind(
        "variance_shift",
        "Over training, for each layer after a dropout: the variance its normalization sees in training "
        "over the variance without dropout, measured on the minibatch (solid) and as Li et al. 2019's "
        "formula gives it (dotted), a line per run group.",
        statistics=("shift_measured", "shift_predicted"),
        takes_layers=True,
        declared_only=True,
    ),
}
