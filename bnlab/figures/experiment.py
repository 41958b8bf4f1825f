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

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from bnlab.errors import ResultsError, SpecError
from bnlab.figures.draw import save_figure
from bnlab.figures.groups import axis_name, numeric_key, sweepable
from bnlab.figures.kinds import DRAW
from bnlab.lab.choices import FigureFormat
from bnlab.lab.results import ExperimentResults, load_experiment
from bnlab.spec.figure_kinds import FIGURE_KINDS

FORMATS = tuple(f.value for f in FigureFormat)
PLOT_KINDS = tuple(FIGURE_KINDS)
PLOT_KEYS = ("kind", "x", "title", "layers")  # as bnlab.spec.experiment resolves them (x, layers: null where unused)


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
        return [save_figure(figure, out_dir / f"{stem}.{fmt}", fmt) for stem, figure in figures for fmt in formats]
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


def _default_plan(results: ExperimentResults) -> list[dict]:
    """Every figure kind that applies, in FIGURE_KINDS' order: one per swept numeric key with more
    than 3 values for a kind that takes x, a kind that needs a swept key if it is swept, a kind of
    recorded statistics if they are recorded, every other kind; never a declared_only kind."""
    recorded = set(results.probes["statistic"])
    plan: list[dict] = []
    for name, kind in FIGURE_KINDS.items():
        if kind.declared_only:
            continue
        if kind.takes_x:
            plan += [{"kind": name, "x": key} for key in results.swept_keys if sweepable(results, key)]
        elif kind.swept is not None:
            plan += [{"kind": name}] if kind.swept in results.swept_keys else []
        elif kind.statistics:
            plan += [{"kind": name}] if recorded >= set(kind.statistics) else []
        else:
            plan.append({"kind": name})
    return plan


def figure_plan(results: ExperimentResults) -> list[dict]:
    """The spec's `plots` entries, checked; without them, the kinds that apply (_default_plan)."""
    declared = results.spec.get("plots")
    if declared is None:
        return _default_plan(results)
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
        if kind.takes_x and not (plot.get("x") in results.swept_keys and numeric_key(results, plot["x"])):
            numeric = ", ".join(k for k in results.swept_keys if numeric_key(results, k)) or "none is swept"
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
