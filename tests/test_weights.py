"""Trained nets kept (issue 30): every run saves weights.npz, `bnlab.load_net` rebuilds the net that
scored the run's best validation accuracy, `model.init_from` starts a run from another's weights
(one clear line when they do not fit), `bnlab reproduce` compares weights, the claims lab keeps none."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE, bnlab

from bnlab import FullyConnectedNet, Solver, load_net
from bnlab.data import datasets
from bnlab.errors import ResultsError
from bnlab.lab.weights import read_state

pytestmark = pytest.mark.usefixtures("shared_data")


def test_a_state_round_trips_into_a_fresh_net_and_misfits_are_named():
    trained = FullyConnectedNet([6, 5], input_dim=4, num_classes=3, normalization="batchnorm", seed=1)
    trained.loss(np.random.RandomState(0).randn(8, 4).astype(np.float32), np.arange(8) % 3)  # running stats exist
    fresh = FullyConnectedNet([6, 5], input_dim=4, num_classes=3, normalization="batchnorm", seed=2)
    fresh.load_state(trained.state())
    assert trained.state().keys() == fresh.state().keys()
    assert all(np.array_equal(trained.state()[k], fresh.state()[k]) for k in trained.state())
    wider = FullyConnectedNet([7, 5], input_dim=4, num_classes=3, normalization="batchnorm", seed=1)
    with pytest.raises(ValueError, match=r"W1 is \(4, 6\) there but \(4, 7\) here"):
        wider.load_state(trained.state())
    assert not np.array_equal(wider.params["W1"][:, :6], trained.params["W1"])  # nothing half-loaded


def test_load_net_scores_the_runs_recorded_best_validation_accuracy_exactly(smoke_results):
    runs = pd.read_csv(smoke_results / "runs.csv")
    for run_id, recorded in zip(runs["run_id"], runs["best_val_acc"], strict=True):
        folder = smoke_results / run_id
        net = load_net(folder)
        config = __import__("yaml").safe_load((folder / "config.yaml").read_text())
        data = datasets.load_dataset(datasets.Request.of_run(config))
        solver = Solver(net, data)
        assert solver.check_accuracy(data["X_val"], data["y_val"]) == recorded, run_id


def test_a_folder_without_weights_is_one_clear_error(tmp_path):
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(ResultsError, match="has no weights.npz"):
        read_state(tmp_path)


def test_init_from_starts_from_the_weights_and_refuses_a_net_they_do_not_fit(smoke_results, tmp_path):
    source = smoke_results / "normalization=batchnorm__seed=0"
    spec = tmp_path / "finetune.yaml"
    spec.write_text(SMOKE.read_text().replace("name: smoke", "name: finetune"))
    one_step = ["--set", "solver.num_epochs=1", "--set", "solver.optim_config.learning_rate=1e-12", "--workers", 1,
                "--set", "model.normalization=batchnorm"]  # fmt: skip
    result = bnlab("run", spec, "--out", tmp_path, "--set", f"model.init_from={source}", *one_step)
    assert result.exit_code == 0, result.output
    # a learning rate of 1e-12 leaves the weights where init_from put them
    started = read_state(tmp_path / "finetune" / "normalization=batchnorm__seed=0")
    np.testing.assert_allclose(started["param/W1"], read_state(source)["param/W1"], rtol=0, atol=1e-9)

    result = bnlab("run", spec, "--out", tmp_path / "other", "--set", f"model.init_from={source}",
                   "--set", "model.hidden_dims=[30, 20]", *one_step)  # fmt: skip
    assert result.exit_code == 2 or result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "model.init_from" in result.stderr and "W1 is (3072, 20) there but (3072, 30) here" in result.stderr
    assert not (tmp_path / "other" / "finetune").exists() or not any((tmp_path / "other" / "finetune").glob("*/"))


def test_reproduce_compares_the_weights(smoke_results, tmp_path):
    copy = tmp_path / "smoke"
    shutil.copytree(smoke_results, copy)
    run = copy / "normalization=none__seed=1"
    state = read_state(run)
    state["param/W2"] = state["param/W2"] + np.float32(1e-3)
    np.savez(run / "weights.npz", **state)
    result = bnlab("reproduce", copy, "--workers", 1)
    assert result.exit_code == 1, result.output
    assert "weights.npz: param/W2 differs" in result.output
    assert "3 identical, 1 different" in result.output
