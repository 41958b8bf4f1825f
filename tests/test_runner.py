"""The runner: the results layout on disk, determinism, resuming, atomic writes, the lock and
diverging runs. Every run trains on the shared CIFAR-10 subset in well under a second."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SMOKE, read_csv
from filelock import FileLock
from threadpoolctl import threadpool_limits

import bnlab
from bnlab.data.datasets import load_cifar10
from bnlab.errors import ResultsError
from bnlab.lab import results
from bnlab.lab.executors import make_executor
from bnlab.lab.results import finished_on_disk
from bnlab.lab.runner import run_experiment
from bnlab.nn.nets import FullyConnectedNet
from bnlab.nn.solver import Solver
from bnlab.spec.experiment import experiment_from_text, load_experiment

SMOKE_IDS = [f"normalization={norm}__seed={seed}" for norm in ("none", "batchnorm") for seed in (0, 1)]
RUN_FILES = ("config.yaml", "history.csv", "epochs.csv", "meta.json", "weights.npz")


pytestmark = pytest.mark.usefixtures("shared_data")  # without the data every test here skips, saying so


def run_files(exp_dir: Path) -> dict[str, bytes]:
    """Every file of every run folder, by relative path."""
    return {
        str(p.relative_to(exp_dir)): p.read_bytes()
        for p in sorted(exp_dir.glob("*/*"))
        if not p.parent.name.startswith(".")
    }


def stats(exp_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every run folder and file: a rewrite changes them."""
    return {
        str(p.relative_to(exp_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted([*exp_dir.glob("*/"), *exp_dir.glob("*/*")])
        if not p.name.startswith(".")
    }


def smoke(*overrides: str):
    return load_experiment(SMOKE, list(overrides))


def serial():
    return make_executor(1)


# --- the layout of results/<experiment>/ -------------------------------------------------------


def test_results_layout(tmp_path):
    experiment = smoke()
    report = run_experiment(experiment, tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    assert report.path == exp_dir and report.total == 4 and len(report.outcomes) == 4 and report.kept == []

    spec = yaml.safe_load((exp_dir / "spec.yaml").read_text())
    assert spec == experiment.resolved()
    assert spec["name"] == "smoke" and spec["solver"]["num_epochs"] == 2 and spec["data"]["num_train"] == 200

    with open(exp_dir / "runs.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == [
        "run_id",
        "status",
        "model.normalization",
        "seed",
        "best_val_acc",
        "best_train_acc",
        "final_train_loss",
        "wall_s",
    ]
    rows = read_csv(exp_dir / "runs.csv")
    assert [r["run_id"] for r in rows] == SMOKE_IDS
    assert [(r["model.normalization"], r["seed"]) for r in rows] == [
        ("none", "0"),
        ("none", "1"),
        ("batchnorm", "0"),
        ("batchnorm", "1"),
    ]
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(p.name for p in exp_dir.iterdir() if not p.name.startswith(".")) == sorted(
        [*SMOKE_IDS, "runs.csv", "spec.yaml"]
    )

    iterations = 2 * (200 // 50)  # num_epochs * max(num_train // batch_size, 1)
    for row, run in zip(rows, experiment.runs, strict=True):
        run_dir = exp_dir / row["run_id"]
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(RUN_FILES)

        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed"] == int(row["seed"])
        assert config["model"]["normalization"] == (None if row["model.normalization"] == "none" else "batchnorm")
        assert config["model"]["hidden_dims"] == [20, 20] and config["solver"]["batch_size"] == 50
        assert config == yaml.safe_load(yaml.safe_dump(run.config))

        history = read_csv(run_dir / "history.csv")
        assert list(history[0]) == ["iteration", "epoch", "loss"]
        assert [int(h["iteration"]) for h in history] == list(range(1, iterations + 1))
        assert [int(h["epoch"]) for h in history] == [1] * 4 + [2] * 4
        losses = [float(h["loss"]) for h in history]
        assert all(math.isfinite(x) for x in losses)
        assert losses[0] == pytest.approx(math.log(10), abs=0.1)  # small weights: uniform scores

        epochs = read_csv(run_dir / "epochs.csv")
        assert list(epochs[0]) == ["epoch", "train_acc", "val_acc", "learning_rate"]
        assert [int(e["epoch"]) for e in epochs] == [0, 1, 2]
        assert [float(e["learning_rate"]) for e in epochs] == [1e-3] * 3
        train_acc = [float(e["train_acc"]) for e in epochs]
        val_acc = [float(e["val_acc"]) for e in epochs]
        assert all(0 <= a <= 1 for a in train_acc + val_acc)

        # runs.csv agrees with the histories, recomputed here
        assert float(row["best_val_acc"]) == max(val_acc)
        assert float(row["best_train_acc"]) == max(train_acc)
        assert float(row["final_train_loss"]) == pytest.approx(math.fsum(losses[-100:]) / len(losses[-100:]), rel=1e-12)
        assert float(row["wall_s"]) >= 0

        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["status"] == "done" and meta["seed"] == int(row["seed"]) and meta["run_id"] == row["run_id"]
        assert meta["metrics"]["best_val_acc"] == max(val_acc)
        assert meta["metrics"]["final_train_loss"] == float(row["final_train_loss"])
        assert meta["wall_s"] >= 0 and isinstance(meta["started"], str)
        assert meta["versions"]["numpy"] == np.__version__ and meta["versions"]["bnlab"] == bnlab.__version__
        assert "python" in meta["versions"] and "git_commit" in meta


def test_final_train_loss_is_the_mean_of_the_last_100_losses(tmp_path):
    # batch 5 on 200 images, 3 epochs: 120 iterations, so the last 100 are not all of them
    experiment = smoke("solver.batch_size=5", "solver.num_epochs=3", "seeds=[0]")
    run_experiment(experiment, tmp_path, serial())
    for row in read_csv(tmp_path / "smoke" / "runs.csv"):
        losses = [float(h["loss"]) for h in read_csv(tmp_path / "smoke" / row["run_id"] / "history.csv")]
        assert len(losses) == 120
        assert float(row["final_train_loss"]) == pytest.approx(math.fsum(losses[20:]) / 100, rel=1e-12)
        assert float(row["final_train_loss"]) != pytest.approx(math.fsum(losses) / 120, rel=1e-9)


@pytest.mark.parametrize(("batch_size", "per_epoch"), [(50, 4), (30, 6), (200, 1), (300, 1)])
def test_iterations_per_epoch(tmp_path, batch_size, per_epoch):
    experiment = smoke(
        f"solver.batch_size={batch_size}", "seeds=[0]", "model.normalization=null", "solver.num_epochs=3"
    )
    run_experiment(experiment, tmp_path, serial())
    history = read_csv(tmp_path / "smoke" / "normalization=none__seed=0" / "history.csv")
    assert len(history) == 3 * per_epoch
    assert [int(h["epoch"]) for h in history] == [e for e in (1, 2, 3) for _ in range(per_epoch)]
    # Accuracy after the first iteration (epoch 0, unless it ended epoch 1) and after every epoch.
    epochs = read_csv(tmp_path / "smoke" / "normalization=none__seed=0" / "epochs.csv")
    assert [int(e["epoch"]) for e in epochs] == ([1, 2, 3] if per_epoch == 1 else [0, 1, 2, 3])


# --- determinism -------------------------------------------------------------------------------


def test_same_files_with_one_or_two_workers(tmp_path):
    experiment = smoke()
    run_experiment(experiment, tmp_path / "one", make_executor(1))
    run_experiment(experiment, tmp_path / "two", make_executor(2))
    one, two = run_files(tmp_path / "one" / "smoke"), run_files(tmp_path / "two" / "smoke")
    assert len(one) == 4 * len(RUN_FILES)
    for name in one:
        if name.endswith(("history.csv", "epochs.csv", "config.yaml", "weights.npz")):  # the trained nets too
            assert one[name] == two[name], name


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_a_run_is_the_notebook_cell_it_describes(tmp_path, normalization):
    """np.random.RandomState(seed) -> the net's weights, then the Solver's minibatches, by hand."""
    run_experiment(smoke("seeds=[1]"), tmp_path, serial())
    run_dir = tmp_path / "smoke" / f"normalization={'none' if normalization is None else normalization}__seed=1"

    data = load_cifar10(num_train=200, num_val=100, num_test=100)
    rs = np.random.RandomState(1)
    model = FullyConnectedNet([20, 20], weight_scale=2e-2, normalization=normalization, dtype=np.float32, rng=rs)
    solver = Solver(
        model, data, update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=50, num_epochs=2, rng=rs
    )
    with threadpool_limits(limits=1):  # as every executor trains: one BLAS thread
        solver.train()

    assert [float(h["loss"]) for h in read_csv(run_dir / "history.csv")] == [float(x) for x in solver.loss_history]
    epochs = read_csv(run_dir / "epochs.csv")
    assert [float(e["train_acc"]) for e in epochs] == solver.train_acc_history
    assert [float(e["val_acc"]) for e in epochs] == solver.val_acc_history
    assert [float(e["learning_rate"]) for e in epochs] == [float(x) for x in solver.lr_history]


# --- resuming ----------------------------------------------------------------------------------


def test_rerun_keeps_finished_runs_untouched(tmp_path):
    run_experiment(smoke(), tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    before, files = stats(exp_dir), run_files(exp_dir)
    runs_csv = (exp_dir / "runs.csv").read_bytes()

    report = run_experiment(smoke(), tmp_path, serial())
    assert report.outcomes == [] and sorted(report.kept) == sorted(SMOKE_IDS)
    assert stats(exp_dir) == before and run_files(exp_dir) == files
    assert (exp_dir / "runs.csv").read_bytes() == runs_csv


def test_a_deleted_run_alone_is_redone(tmp_path):
    import shutil

    run_experiment(smoke(), tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    files = run_files(exp_dir)
    victim = "normalization=batchnorm__seed=0"
    shutil.rmtree(exp_dir / victim)
    before = {k: v for k, v in stats(exp_dir).items() if not k.startswith(victim)}

    report = run_experiment(smoke(), tmp_path, serial())
    assert [o.run_id for o in report.outcomes] == [victim]
    assert {k: v for k, v in stats(exp_dir).items() if not k.startswith(victim)} == before
    redone = run_files(exp_dir)
    for name in files:  # the redone run is the same run
        if not name.endswith("meta.json"):
            assert redone[name] == files[name], name
    assert [r["status"] for r in read_csv(exp_dir / "runs.csv")] == ["done"] * 4


def test_force_redoes_every_run(tmp_path):
    run_experiment(smoke(), tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    before = stats(exp_dir)
    report = run_experiment(smoke(), tmp_path, serial(), force=True)
    assert sorted(o.run_id for o in report.outcomes) == sorted(SMOKE_IDS) and report.kept == []
    after = stats(exp_dir)
    for run_id in SMOKE_IDS:
        assert after[run_id] != before[run_id]  # a new folder renamed into place


def test_a_changed_config_is_refused_and_nothing_is_written(tmp_path):
    run_experiment(smoke(), tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in exp_dir.iterdir() if p.is_file()}
    runs = stats(exp_dir)

    with pytest.raises(ResultsError) as error:
        run_experiment(smoke("model.reg=0.1"), tmp_path, serial())
    message = str(error.value)
    assert "--force" in message and "reg" in message and str(exp_dir) in message
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in exp_dir.iterdir() if p.is_file()} == before
    assert stats(exp_dir) == runs

    report = run_experiment(smoke("model.reg=0.1"), tmp_path, serial(), force=True)
    assert len(report.outcomes) == 4
    assert yaml.safe_load((exp_dir / "spec.yaml").read_text())["model"]["reg"] == 0.1


# --- atomic writes -----------------------------------------------------------------------------


def test_leftovers_of_a_killed_process_are_removed_and_unfinished_runs_redone(tmp_path):
    run_experiment(smoke(), tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    files = run_files(exp_dir)
    # what a process killed while writing leaves: a staging folder, temporary files, a run
    # folder without meta.json (written by something that did not rename atomically)
    staging = exp_dir / ".normalization=none__seed=0.k1ll3d"
    staging.mkdir()
    (staging / "history.csv").write_text("iteration,epoch,loss\n1,1,2.3\n")
    (exp_dir / ".runs.csv.tmp").write_text("run_id,status\n")
    (exp_dir / ".spec.yaml.x7f2").write_text("name: half")
    unfinished = "normalization=none__seed=1"
    (exp_dir / unfinished / "meta.json").unlink()

    report = run_experiment(smoke(), tmp_path, serial())
    assert [o.run_id for o in report.outcomes] == [unfinished]
    assert sorted(p.name for p in exp_dir.iterdir() if p.name.startswith(".")) == [".lock"]
    assert run_files(exp_dir).keys() == files.keys()
    assert (exp_dir / unfinished / "history.csv").read_bytes() == files[f"{unfinished}/history.csv"]
    assert [r["status"] for r in read_csv(exp_dir / "runs.csv")] == ["done"] * 4


def test_ctrl_c_between_a_runs_folder_and_its_row_still_records_it(tmp_path, monkeypatch):
    experiment = smoke("seeds=[0]")
    calls = []
    write_runs_csv = results.write_runs_csv

    def interrupted_once(*args):
        calls.append(1)
        if len(calls) == 2:  # the first run's row (the first call writes the plan): Ctrl-C lands here
            raise KeyboardInterrupt
        write_runs_csv(*args)

    monkeypatch.setattr(results, "write_runs_csv", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, tmp_path, serial())
    exp_dir = tmp_path / "smoke"
    rows = read_csv(exp_dir / "runs.csv")
    assert [r["status"] for r in rows] == ["done", "pending"]
    assert (exp_dir / rows[0]["run_id"] / "meta.json").exists() and not (exp_dir / rows[1]["run_id"]).exists()
    assert list(finished_on_disk(experiment.runs, exp_dir)) == [rows[0]["run_id"]]
    assert float(rows[0]["best_val_acc"]) > 0


def test_a_failed_run_is_redone(tmp_path):
    run_experiment(smoke(), tmp_path, serial())
    meta_file = tmp_path / "smoke" / "normalization=none__seed=0" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "status": "failed"}))
    report = run_experiment(smoke(), tmp_path, serial())
    assert [o.run_id for o in report.outcomes] == ["normalization=none__seed=0"]
    assert json.loads(meta_file.read_text())["status"] == "done"


# --- the lock ----------------------------------------------------------------------------------


def test_a_locked_experiment_is_refused(tmp_path):
    exp_dir = tmp_path / "smoke"
    exp_dir.mkdir()
    with FileLock(exp_dir / ".lock"):
        with pytest.raises(ResultsError, match="another `bnlab run` is writing"):
            run_experiment(smoke(), tmp_path, serial())
        assert [p.name for p in exp_dir.iterdir()] == [".lock"]
    run_experiment(smoke(), tmp_path, serial())  # free again
    assert len(read_csv(exp_dir / "runs.csv")) == 4


# --- diverging runs ----------------------------------------------------------------------------

DIVERGING = """
name: diverge
data: {num_train: 200, num_val: 50, num_test: 10}
model: {hidden_dims: [20, 20], weight_scale: 2.0e-2}
solver: {update_rule: sgd, batch_size: 50, num_epochs: 3}
sweep:
  solver.optim_config.learning_rate: [1.0e-3, 1.0e+6]
"""


def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    experiment = experiment_from_text(DIVERGING, "diverge.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_experiment(experiment, tmp_path, serial())
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []  # the status says it
    exp_dir = tmp_path / "diverge"
    assert {o.run_id: o.status for o in report.outcomes} == {
        "learning_rate=0.001__seed=0": "done",
        "learning_rate=1e+06__seed=0": "diverged",
    }
    rows = {r["run_id"]: r for r in read_csv(exp_dir / "runs.csv")}
    assert rows["learning_rate=0.001__seed=0"]["status"] == "done"
    assert rows["learning_rate=1e+06__seed=0"]["status"] == "diverged"

    run_dir = exp_dir / "learning_rate=1e+06__seed=0"
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "diverged"
    losses = [float(h["loss"]) for h in read_csv(run_dir / "history.csv")]
    assert 1 <= len(losses) < 3 * 4  # stopped at the first nan/inf loss, which is kept
    assert not math.isfinite(losses[-1]) and all(math.isfinite(x) for x in losses[:-1])
    assert math.isnan(float(rows["learning_rate=1e+06__seed=0"]["final_train_loss"]))
    assert meta["metrics"]["final_train_loss"] is None  # JSON has no nan
    epochs = read_csv(run_dir / "epochs.csv")
    assert float(rows["learning_rate=1e+06__seed=0"]["best_val_acc"]) == max(float(e["val_acc"]) for e in epochs)
    assert len(read_csv(exp_dir / "learning_rate=0.001__seed=0" / "history.csv")) == 12

    # a diverged run is finished: a rerun keeps it
    assert run_experiment(experiment, tmp_path, serial()).outcomes == []


def test_weight_scale_one_without_normalization_has_a_finite_loss(tmp_path):
    """Scores of ~1e8 (8 layers of 50, N(0, 1) weights): a stable softmax still gives finite losses."""
    experiment = smoke(
        "model.hidden_dims=[50, 50, 50, 50, 50, 50, 50]",
        "model.weight_scale=1.0",
        "model.normalization=null",
        "seeds=[0]",
    )
    (outcome,) = run_experiment(experiment, tmp_path, serial()).outcomes
    assert outcome.status == "done"
    losses = [float(h["loss"]) for h in read_csv(tmp_path / "smoke" / "normalization=none__seed=0" / "history.csv")]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert min(losses) > 1e3  # far from log(10): the scores are huge, yet the loss is a number


def test_results_have_the_permissions_of_ordinary_files(tmp_path, monkeypatch):
    # Temporary files and folders are private (0600, 0700); renamed into place they must not stay so.
    import stat

    from bnlab.lab import atomic

    monkeypatch.setattr(atomic, "_UMASK", 0o022)
    report = run_experiment(smoke(), tmp_path, serial())
    folders = list(report.path.glob("normalization=*"))
    files = [report.path / "runs.csv", report.path / "spec.yaml", *report.path.glob("normalization=*/*")]
    assert len(folders) == 4 and len(files) == 2 + 4 * len(RUN_FILES)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o755}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


def test_a_conv_run_is_the_notebook_cell_it_describes(tmp_path):
    """model.architecture: conv builds the ConvNet for the data's (3, 32, 32) images from the run's
    RandomState, then trains it as a notebook cell would."""
    text = (
        "name: conv\ndata: {num_train: 40, num_val: 20, num_test: 10}\n"
        "model: {architecture: conv, channels: [4], kernel_size: 5, hidden_dims: [8], normalization: groupnorm,"
        " num_groups: 2, weight_scale: he}\n"
        "solver: {update_rule: adam, batch_size: 20, num_epochs: 1}\nseeds: [3]\n"
    )
    run_experiment(experiment_from_text(text, "conv.yaml"), tmp_path, serial())
    run_dir = tmp_path / "conv" / "seed=3"
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "done"

    data = load_cifar10(num_train=40, num_val=20, num_test=10)
    rs = np.random.RandomState(3)
    model = bnlab.ConvNet([4], kernel_size=5, hidden_dims=[8], normalization="groupnorm", num_groups=2,
                          weight_scale="he", rng=rs)  # fmt: skip
    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=20,
                    num_epochs=1, rng=rs)  # fmt: skip
    with threadpool_limits(limits=1):
        solver.train()
    assert [float(h["loss"]) for h in read_csv(run_dir / "history.csv")] == [float(x) for x in solver.loss_history]
