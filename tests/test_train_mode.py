"""Accuracy in train mode (batch statistics) beside test mode (running statistics): measured on
the same samples, without touching training (solver.train_mode_accuracy), and written to
epochs.csv."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMOKE, needs_shared_data

from bnlab import FullyConnectedNet, Solver
from bnlab.nn.nets import ConvNet
from bnlab.results import load_experiment


def data(rng: np.random.RandomState, shape=(12,)) -> dict[str, np.ndarray]:
    X = rng.randn(80, *shape)
    y = (X.reshape(80, -1)[:, 0] > 0).astype(int) + 2 * (X.reshape(80, -1)[:, 1] > 0)
    return {"X_train": X[:60], "y_train": y[:60], "X_val": X[60:], "y_val": y[60:]}


def test_batch_statistics_scores_are_batch_norm_with_the_batch_s_own_statistics():
    rng = np.random.RandomState(0)
    net = FullyConnectedNet([7], input_dim=5, num_classes=3, normalization="batchnorm", dtype=np.float64, seed=1)
    net.params["gamma1"][:] = rng.rand(7) + 0.5
    X = rng.randn(9, 5) * 3 + 1
    before = {key: value.copy() for key, value in net.bn_params[0].items() if isinstance(value, np.ndarray)}
    h = X @ net.params["W1"] + net.params["b1"]  # independently: normalize with this batch's mean and variance
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * net.params["gamma1"] + net.params["beta1"]
    expected = np.maximum(h, 0) @ net.params["W2"] + net.params["b2"]
    assert np.allclose(net.batch_statistics_scores(X), expected, rtol=1e-12, atol=1e-12)
    after = {key: value for key, value in net.bn_params[0].items() if isinstance(value, np.ndarray)}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FullyConnectedNet([10, 10], input_dim=12, num_classes=4, normalization="noisy_batchnorm",
                                  dropout_keep_ratio=0.8, seed=3),
        lambda: ConvNet([4], input_dim=(2, 4, 4), num_classes=4, normalization="batchnorm", seed=3),
    ],
    ids=["noisy batch norm and dropout", "conv batch norm"],
)  # fmt: skip
def test_measuring_train_mode_changes_nothing_of_training(make):
    histories = []
    for measure in (False, True):
        rng = np.random.RandomState(5)
        shape = (12,) if isinstance(make(), FullyConnectedNet) else (2, 4, 4)
        solver = Solver(make(), data(rng, shape), update_rule="adam", batch_size=10, num_epochs=3,
                        num_train_samples=20, rng=rng, train_mode_accuracy=measure)  # fmt: skip
        solver.train()
        histories.append((solver.loss_history, solver.train_acc_history, solver.val_acc_history))
        if measure:
            assert len(solver.train_acc_train_mode_history) == len(solver.train_acc_history)
            assert len(solver.val_acc_train_mode_history) == len(solver.val_acc_history)
    assert histories[0] == histories[1]


def test_without_normalization_train_mode_is_test_mode():
    rng = np.random.RandomState(2)
    solver = Solver(FullyConnectedNet([10], input_dim=12, num_classes=4, seed=0), data(rng), batch_size=10,
                    num_epochs=2, rng=rng, train_mode_accuracy=True)  # fmt: skip
    solver.train()
    assert solver.train_acc_train_mode_history == solver.train_acc_history
    assert solver.val_acc_train_mode_history == solver.val_acc_history


@needs_shared_data
def test_a_spec_records_both_modes_in_epochs_csv(tmp_path):
    from typer.testing import CliRunner

    from bnlab.cli import app

    result = CliRunner().invoke(
        app, ["run", str(SMOKE), "--out", str(tmp_path), "--workers", "1", "--set", "solver.train_mode_accuracy=true"]
    )
    assert result.exit_code == 0, result.output
    epochs = load_experiment(tmp_path / "smoke").epochs
    assert {"train_acc_train_mode", "val_acc_train_mode"} <= set(epochs.columns)
    assert epochs[["train_acc_train_mode", "val_acc_train_mode"]].notna().all().all()
    header = (tmp_path / "smoke" / "normalization=none__seed=0" / "epochs.csv").read_text().splitlines()[0]
    assert header == "epoch,train_acc,val_acc,learning_rate,train_acc_train_mode,val_acc_train_mode"
