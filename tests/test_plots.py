"""bnlab.figures: figures of synthetic results folders (written by test_results.write_results_folder)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from test_results import _set_cell, write_results_folder

from bnlab.errors import ResultsError, SpecError
from bnlab.figures.experiment import build_figures, figure_plan, plot_experiment
from bnlab.figures.kinds import (
    activations_figure,
    batch_size_figures,
    history_figure,
    ics_figure,
    landscape_figure,
    sweep_figure,
)
from bnlab.results import load_experiment

PNG = b"\x89PNG\r\n\x1a\n"
SPEC = {"name": "exp", "model": {"hidden_dims": [50, 50], "normalization": None}, "solver": {}, "seeds": [0]}


def _spec(**changes) -> dict:
    return {**SPEC, **changes}


def _labelled(ax) -> list:
    """The lines that carry a legend label (the run groups' lines)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _diverged_markers(ax) -> list:
    return [line for line in ax.get_lines() if line.get_marker() == "x"]


@pytest.fixture(scope="module")
def weight_scale_folder(tmp_path_factory):
    """2 normalizations x 5 log-spaced weight scales x 2 seeds; none@1.0 seed 1 diverges (nan loss)."""
    runs = []
    for norm in (None, "batchnorm"):
        for scale in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
            for seed in (0, 1):
                quality = 0.2 + 0.1 * seed + (0.4 if norm else 0.0) * (scale > 1e-3)
                runs.append(
                    {
                        "swept": {"model.normalization": norm, "model.weight_scale": scale},
                        "seed": seed,
                        "quality": quality,
                    }
                )
    runs[9].update(status="diverged", diverge_at=33)
    folder = tmp_path_factory.mktemp("results") / "weight_scale"
    return write_results_folder(folder, runs, spec=_spec(name="weight_scale"), num_epochs=4, iterations_per_epoch=20)


@pytest.fixture(scope="module")
def batch_size_folder(tmp_path_factory):
    """The notebooks' batch-size experiment: none@5 and batchnorm@5/10/50, one seed."""
    cases = [(None, 5), ("batchnorm", 5), ("batchnorm", 10), ("batchnorm", 50)]
    runs = [
        {"swept": {"model.normalization": n, "solver.batch_size": b}, "seed": 0, "quality": 0.2 + 0.1 * i}
        for i, (n, b) in enumerate(cases)
    ]
    folder = tmp_path_factory.mktemp("results") / "batch_size"
    return write_results_folder(folder, runs, spec=_spec(name="batch_size"), num_epochs=4, iterations_per_epoch=20)


def test_history_only_experiment(tmp_path):
    spec = _spec(name="single", model={"normalization": "batchnorm"})
    folder = write_results_folder(
        tmp_path / "single", [{"seed": 231, "quality": 0.7}], spec, 6, iterations_per_epoch=21
    )
    res = load_experiment(folder)
    assert figure_plan(res) == [{"kind": "history"}]

    written = plot_experiment(folder)
    assert written == [folder / "figures" / "history.png"]
    assert written[0].read_bytes().startswith(PNG) and written[0].stat().st_size > 10_000
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["history.png"]  # no temporary files left

    fig = history_figure(res)
    loss_ax, train_ax, val_ax = fig.axes
    assert loss_ax.get_title().startswith("Training loss") and train_ax.get_title() == "Training accuracy"
    assert val_ax.get_title() == "Validation accuracy"
    assert [ax.get_xlabel() for ax in fig.axes] == ["Iteration", "Epoch", "Epoch"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["Loss", "Accuracy", "Accuracy"]
    assert "single" in fig.get_suptitle() and "diverged" not in fig.get_suptitle()
    assert [line.get_label() for line in _labelled(train_ax)] == ["batchnorm"]  # the spec's normalization

    # One run: the raw loss faintly, and its centred moving average over one epoch (21 iterations).
    raw, smooth = loss_ax.get_lines()
    loss = res.history["loss"].to_numpy()
    np.testing.assert_allclose(raw.get_ydata(), loss)
    assert raw.get_alpha() < 0.5 and smooth.get_linewidth() > raw.get_linewidth()
    expected = [loss[i - 10 : i + 11].mean() for i in range(10, len(loss) - 10)]
    np.testing.assert_allclose(smooth.get_ydata()[10:-10], expected)
    # Accuracy per epoch 0..6, as recorded.
    np.testing.assert_allclose(train_ax.get_lines()[0].get_xdata(), range(7))
    np.testing.assert_allclose(val_ax.get_lines()[0].get_ydata(), res.epochs["val_acc"])


def test_weight_scale_sweep_default_figures(weight_scale_folder, tmp_path):
    res = load_experiment(weight_scale_folder)
    assert figure_plan(res) == [{"kind": "history"}, {"kind": "sweep", "x": "model.weight_scale"}]

    written = plot_experiment(weight_scale_folder, formats=("png", "svg", "pdf"), out_dir=tmp_path / "figs")
    names = ["history", "sweep_model_weight_scale"]
    assert written == [tmp_path / "figs" / f"{n}.{fmt}" for n in names for fmt in ("png", "svg", "pdf")]
    for path in written:
        head = path.read_bytes()[:400]
        assert {"png": head.startswith(PNG), "svg": b"<svg" in head, "pdf": head.startswith(b"%PDF")}[path.suffix[1:]]


def test_sweep_figure_content(weight_scale_folder):
    res = load_experiment(weight_scale_folder)
    fig = sweep_figure(res, "model.weight_scale")
    assert [ax.get_title() for ax in fig.axes] == [
        "Best validation accuracy",
        "Best training accuracy",
        "Final training loss (mean of the last 100 iterations)",
    ]
    assert [ax.get_ylabel() for ax in fig.axes] == ["Accuracy", "Accuracy", "Loss"]
    assert fig.axes[-1].get_xlabel() == "Weight initialization scale"
    assert all(ax.get_xscale() == "log" for ax in fig.axes)  # 1e-4 .. 1: log-spaced
    assert "1 diverged run" in fig.get_suptitle() and "2 seeds" in fig.get_suptitle()
    assert "diverged" in [t.get_text() for t in fig.legends[0].get_texts()]

    # The best val accuracy of each run is the max of its val_acc curve; a line is the mean over
    # the done seeds at each scale (the diverged seed of none@1.0 is left out), with a std band.
    best = res.epochs.groupby("run_id")["val_acc"].max()
    runs = res.runs.set_index("run_id").assign(best=best)
    val_ax = fig.axes[0]
    none_line, bn_line = _labelled(val_ax)
    assert (none_line.get_label(), bn_line.get_label()) == ("none", "batchnorm")
    np.testing.assert_allclose(none_line.get_xdata(), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    done = runs[runs["status"] == "done"]
    for line, norm in ((none_line, "none"), (bn_line, "batchnorm")):
        expected = done[done["model.normalization"] == norm].groupby("model.weight_scale")["best"].mean()
        np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    assert none_line.get_ydata()[-1] == pytest.approx(runs.loc["run008", "best"])  # seed 0 only
    assert none_line.get_linestyle() == "--" and bn_line.get_linestyle() == "-"
    assert len(val_ax.collections) == 2  # one +-std band per group

    # The diverged run: an 'x' at scale 1.0 at the top of every panel, above all data.
    for ax in fig.axes:
        (marker,) = _diverged_markers(ax)
        assert marker.get_xdata()[0] == 1.0 and marker.get_ydata()[0] > 0.9  # y in axis units
        assert marker.get_color() == none_line.get_color()


def test_history_figure_marks_the_diverged_run(weight_scale_folder):
    res = load_experiment(weight_scale_folder)
    fig = history_figure(res)
    loss_ax, train_ax, val_ax = fig.axes
    assert len(_labelled(train_ax)) == 10  # 2 normalizations x 5 scales, seeds averaged
    assert "1 diverged run" in fig.get_suptitle()
    # It stopped at iteration 33 (in epoch 2): its loss curve ends there, its accuracy after epoch 1.
    (loss_marker,) = _diverged_markers(loss_ax)
    assert loss_marker.get_xdata()[0] == 33
    (acc_marker,) = _diverged_markers(train_ax)
    assert acc_marker.get_xdata()[0] == 1
    diverged_acc = res.epochs[res.epochs["run_id"] == "run009"]["train_acc"].iloc[-1]
    assert acc_marker.get_ydata()[0] == pytest.approx(diverged_acc)
    # Its loss exploded to ~1e9 before the nan; the loss axis still shows the bulk of the curves.
    assert res.history["loss"].max() > 1e8
    low, high = loss_ax.get_ylim()
    assert high < 10
    group_means = [line.get_ydata() for line in loss_ax.get_lines() if line.get_linewidth() == 1.8]
    assert len(group_means) == 10 and low <= np.nanmin(group_means) and np.nanmax(group_means) <= high


def test_a_group_whose_runs_all_diverged_is_still_drawn_labelled_and_marked(tmp_path):
    runs = [{"swept": {"model.normalization": n}, "seed": 0} for n in (None, "batchnorm")]
    runs[0].update(status="diverged", diverge_at=12)
    res = load_experiment(
        write_results_folder(tmp_path / "exp", runs, spec=_spec(), num_epochs=3, iterations_per_epoch=10)
    )
    fig = history_figure(res)
    loss_ax, train_ax, _ = fig.axes
    assert [line.get_label() for line in _labelled(train_ax)] == ["none", "batchnorm"]
    (marker,) = _diverged_markers(loss_ax)
    assert marker.get_xdata()[0] == 12 and "1 diverged run" in fig.get_suptitle()
    # Its loss exploded before the nan: the marker sits on the top row, the y-range fits the rest.
    assert loss_ax.get_ylim()[1] < 10


def test_many_groups_drop_bands_and_markers(tmp_path):
    runs = [{"swept": {"model.weight_scale": 10.0**-e}, "seed": s} for e in range(12) for s in (0, 1)]
    res = load_experiment(
        write_results_folder(tmp_path / "exp", runs, spec=_spec(), num_epochs=2, iterations_per_epoch=5)
    )
    fig = history_figure(res)
    train_ax = fig.axes[1]
    assert len(_labelled(train_ax)) == 12 and not train_ax.collections
    assert {line.get_marker() for line in _labelled(train_ax)} == {"None"}
    assert "mean over 2 seeds" in fig.get_suptitle()


def test_batch_size_union_figures(batch_size_folder, tmp_path):
    res = load_experiment(batch_size_folder)
    # Only 3 distinct batch sizes: no sweep figure, the batch-size figure instead.
    assert figure_plan(res) == [{"kind": "history"}, {"kind": "batch_size"}]
    written = plot_experiment(batch_size_folder, out_dir=tmp_path)
    assert [p.name for p in written] == ["history.png", "batch_size_batchnorm.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)

    (fig,) = batch_size_figures(res).values()
    train_ax, val_ax = fig.axes
    assert train_ax.get_title() == "Training accuracy (batchnorm)"
    assert val_ax.get_title() == "Validation accuracy (batchnorm)"
    assert val_ax.get_xlabel() == "Epoch" and train_ax.get_ylabel() == "Accuracy"
    labels = [line.get_label() for line in _labelled(train_ax)]
    assert labels == [
        "none, batch size 5",
        "batchnorm, batch size 5",
        "batchnorm, batch size 10",
        "batchnorm, batch size 50",
    ]
    baseline = _labelled(train_ax)[0]
    assert baseline.get_linestyle() == "--" and baseline.get_marker() == "^"
    # Same batch size, same colour: the reference and the normalized run at batch size 5.
    assert baseline.get_color() == _labelled(train_ax)[1].get_color()
    np.testing.assert_allclose(
        _labelled(val_ax)[3].get_ydata(), res.epochs[res.epochs["run_id"] == "run003"]["val_acc"]
    )


def test_one_batch_size_figure_per_normalization_with_the_baseline_in_each(tmp_path):
    cases = [(None, 5), ("batchnorm", 5), ("batchnorm", 10), ("layernorm", 5), ("layernorm", 10)]
    runs = [{"swept": {"model.normalization": n, "solver.batch_size": b}, "seed": 0} for n, b in cases]
    res = load_experiment(
        write_results_folder(tmp_path / "bs", runs, spec=_spec(), num_epochs=2, iterations_per_epoch=5)
    )
    figures = batch_size_figures(res)
    assert list(figures) == ["batchnorm", "layernorm"]
    for norm, fig in figures.items():
        labels = [line.get_label() for line in _labelled(fig.axes[0])]
        assert labels == ["none, batch size 5", f"{norm}, batch size 5", f"{norm}, batch size 10"]
        assert fig.axes[0].get_title() == f"Training accuracy ({norm})"


def test_linear_axis_and_both_kinds_for_a_wide_batch_size_sweep(tmp_path):
    runs = [{"swept": {"solver.batch_size": b}, "seed": 0} for b in (25, 50, 75, 100)]
    res = load_experiment(
        write_results_folder(tmp_path / "bs", runs, spec=_spec(), num_epochs=2, iterations_per_epoch=5)
    )
    plan = figure_plan(res)
    assert plan == [{"kind": "history"}, {"kind": "sweep", "x": "solver.batch_size"}, {"kind": "batch_size"}]
    fig = sweep_figure(res, "solver.batch_size")
    assert fig.axes[-1].get_xscale() == "linear" and fig.axes[-1].get_xlabel() == "Batch size"
    assert [line.get_label() for line in _labelled(fig.axes[0])] == ["none"]
    assert list(batch_size_figures(res)) == ["none"]  # the experiment's one normalization


def test_declared_plots_are_drawn_with_their_titles(weight_scale_folder, tmp_path):
    folder = tmp_path / "declared"
    folder.mkdir()
    for item in weight_scale_folder.iterdir():  # a copy whose spec declares its plots
        (folder / item.name).symlink_to(item)
    (folder / "spec.yaml").unlink()
    plots = [  # as bnlab.spec.experiment resolves them: unset keys are null
        {"kind": "sweep", "x": "model.weight_scale", "title": "Weight scale, 2 seeds"},
        {"kind": "history", "x": None, "title": None},
        {"kind": "sweep", "x": "model.weight_scale", "title": None},
    ]
    (folder / "spec.yaml").write_text(yaml.safe_dump(_spec(plots=plots)))
    figures = build_figures(load_experiment(folder))
    assert [name for name, _ in figures] == ["sweep_model_weight_scale", "history", "sweep_model_weight_scale_2"]
    titles = [fig.get_suptitle().split("\n")[0] for _, fig in figures]
    assert titles == ["Weight scale, 2 seeds", "exp: training history", "exp: effect of weight initialization scale"]
    written = plot_experiment(folder, out_dir=tmp_path / "out")
    assert [p.name for p in written] == [f"{name}.png" for name, _ in figures]


@pytest.mark.parametrize(
    ("plots", "words"),
    [
        ({"kind": "histogram"}, ["plots[0]", "history, sweep, batch_size"]),
        ({"kind": "sweep", "x": "solver.batch_size"}, ["plots[0]", "solver.batch_size", "model.weight_scale"]),
        ({"kind": "sweep", "x": "model.normalization"}, ["plots[0]", "numeric"]),
        ({"kind": "batch_size"}, ["plots[0]", "solver.batch_size"]),
        ({"kind": "history", "xlabel": "Iter"}, ["plots[0]", "xlabel", "kind, x, title"]),
        ("history", ["plots[0]", "mapping"]),
    ],
)
def test_bad_plot_entries_name_spec_yaml(weight_scale_folder, plots, words):
    res = load_experiment(weight_scale_folder)
    res.spec = _spec(plots=[plots])
    with pytest.raises(ResultsError) as err:
        figure_plan(res)
    assert str(weight_scale_folder / "spec.yaml") in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_final_losses_spanning_orders_of_magnitude_get_a_log_axis_showing_all(weight_scale_folder, tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    for item in weight_scale_folder.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "runs.csv").unlink()
    (folder / "runs.csv").write_text((weight_scale_folder / "runs.csv").read_text())
    _set_cell(folder / "runs.csv", 2, "final_train_loss", "1234567.0")  # none@1e-4, seed 0: done
    fig = sweep_figure(load_experiment(folder), "model.weight_scale")
    loss_ax = fig.axes[2]
    low, high = loss_ax.get_ylim()
    assert loss_ax.get_yscale() == "log"
    done = load_experiment(folder).runs.query("status == 'done'")["final_train_loss"]
    assert low <= done.min() and high >= 1234567.0 / 2  # every run's loss, and the 2-seed mean with the huge one


def test_pending_runs_are_reported_and_not_drawn(tmp_path):
    runs = [{"swept": {"model.weight_scale": s}, "seed": 0} for s in (0.1, 0.2, 0.3, 0.4)]
    runs[3]["status"] = "pending"
    res = load_experiment(
        write_results_folder(tmp_path / "exp", runs, spec=_spec(), num_epochs=2, iterations_per_epoch=5)
    )
    fig = sweep_figure(res, "model.weight_scale")
    assert "1 pending run not shown" in fig.get_suptitle()
    (line,) = _labelled(fig.axes[0])
    np.testing.assert_allclose(line.get_xdata(), [0.1, 0.2, 0.3])


def test_nothing_finished_and_bad_formats(tmp_path):
    pending = write_results_folder(tmp_path / "pending", [{"seed": 0, "status": "pending"}])
    with pytest.raises(ResultsError, match="runs.csv.*no finished runs"):
        plot_experiment(pending)
    done = write_results_folder(tmp_path / "done", [{"seed": 0}], num_epochs=1, iterations_per_epoch=5)
    with pytest.raises(SpecError, match="jpeg"):
        plot_experiment(done, formats=("jpeg",))


def test_replotting_overwrites_in_place(tmp_path):
    folder = write_results_folder(tmp_path / "exp", [{"seed": 0}], num_epochs=2, iterations_per_epoch=5)
    first = plot_experiment(folder, formats=("svg",))
    second = plot_experiment(folder, formats=("svg",))
    assert first == second and sorted(p.name for p in (folder / "figures").iterdir()) == ["history.svg"]


# --- figures of recorded statistics (probes.csv) -------------------------------------------------

PROBE_ITERATIONS = (1, 11, 21, 31)


def probe_value(norm: str, seed: int, iteration: int, layer: int, statistic: str) -> float:
    """A made-up but distinct value per run, iteration, layer and statistic."""
    base = {"p15": -1.0, "p50": 0.0, "p85": 1.0}.get(statistic, 0.5)
    drift = 0.0 if norm == "batchnorm" else 0.05 * iteration  # the unnormalized inputs drift
    return base + drift + 0.1 * seed + 0.01 * layer + (2.0 if statistic == "beta_smoothness" else 0.0)


@pytest.fixture(scope="module")
def probes_folder(tmp_path_factory):
    """none / batchnorm x 2 seeds of a net with 3 hidden layers (4 weighted), every statistic recorded."""
    runs = [{"swept": {"model.normalization": n}, "seed": s} for n in (None, "batchnorm") for s in (0, 1)]
    spec = _spec(name="probes", record={"every": 10})
    folder = write_results_folder(tmp_path_factory.mktemp("results") / "probes", runs, spec=spec,
                                  num_epochs=2, iterations_per_epoch=20)  # fmt: skip
    for index, run in enumerate(runs):
        norm = run["swept"]["model.normalization"] or "none"
        rows = ["iteration,layer,statistic,value"]
        for it in PROBE_ITERATIONS:
            for layer in (1, 2, 3):
                for stat in ("mean", "std", "p15", "p50", "p85", "saturated"):
                    rows.append(f"{it},{layer},{stat},{probe_value(norm, run['seed'], it, layer, stat)!r}")
            for layer in (2, 3, 4):
                for stat in ("ics_l2", "ics_cos"):
                    rows.append(f"{it},{layer},{stat},{probe_value(norm, run['seed'], it, layer, stat)!r}")
            for stat in ("loss_range", "grad_change", "beta_smoothness"):
                rows.append(f"{it},0,{stat},{probe_value(norm, run['seed'], it, 0, stat)!r}")
        (folder / f"run{index:03d}" / "probes.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_recorded_statistics_get_their_figures_by_default(probes_folder, tmp_path):
    results = load_experiment(probes_folder)
    assert [p["kind"] for p in figure_plan(results)] == ["history", "activations", "ics", "landscape"]
    written = plot_experiment(probes_folder, out_dir=tmp_path)
    assert [p.name for p in written] == ["history.png", "activations.png", "ics.png", "landscape.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)


def test_activations_figure_draws_percentile_bands_per_group_and_layer(probes_folder):
    fig = activations_figure(load_experiment(probes_folder), layers=[1, 3])
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "none, layer 1", "batchnorm, layer 1", "none, layer 3", "batchnorm, layer 3"
    ]  # fmt: skip
    p15, p50, p85 = (line.get_ydata() for line in axes[2].get_lines())  # none, layer 3
    for q, line in (("p15", p15), ("p50", p50), ("p85", p85)):
        expected = [np.mean([probe_value("none", s, it, 3, q) for s in (0, 1)]) for it in PROBE_ITERATIONS]
        np.testing.assert_allclose(line, expected)
    np.testing.assert_allclose(axes[2].get_lines()[1].get_xdata(), PROBE_ITERATIONS)
    assert len(axes[2].collections) == 1  # the 15-85 band


def test_ics_and_landscape_figures_draw_the_mean_over_seeds(probes_folder):
    results = load_experiment(probes_folder)
    fig = ics_figure(results)
    assert len(fig.axes) == 2 * 3  # l2 and cosine for layers 2, 3, 4
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Layer 2", "Layer 3", "Layer 4"]
    assert [line.get_label() for line in _labelled(fig.axes[0])] == ["none", "batchnorm"]
    fig = landscape_figure(results)
    assert len(fig.axes) == 3
    bn_line = fig.axes[2].get_lines()[1]  # none, then batchnorm
    expected = [np.mean([probe_value("batchnorm", s, it, 0, "beta_smoothness") for s in (0, 1)])
                for it in PROBE_ITERATIONS]  # fmt: skip
    np.testing.assert_allclose(bn_line.get_ydata(), expected)


@pytest.mark.parametrize(
    "plots, words",
    [
        ([{"kind": "ics", "layers": [0]}], ["plots[0]", "layers must be a list of layer numbers"]),
        ([{"kind": "landscape", "layers": [1]}], ["plots[0]", "layers must be"]),
    ],
)
def test_bad_probe_plot_entries(probes_folder, tmp_path, plots, words):
    folder = tmp_path / "copy"
    shutil.copytree(probes_folder, folder)
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    (folder / "spec.yaml").write_text(yaml.safe_dump({**spec, "plots": plots}))
    with pytest.raises(ResultsError) as info:
        build_figures(load_experiment(folder))
    for word in words:
        assert word in str(info.value)


def test_probe_figures_without_recorded_statistics_say_what_to_record(weight_scale_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(weight_scale_folder, folder)
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    (folder / "spec.yaml").write_text(yaml.safe_dump({**spec, "plots": [{"kind": "landscape"}]}))
    with pytest.raises(ResultsError, match="needs loss_range, grad_change, beta_smoothness in the runs' probes.csv"):
        build_figures(load_experiment(folder))
