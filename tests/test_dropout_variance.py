"""Dropout and batch norm (issue 31, part 2): dropout's position as a model option, and the
variance shift it causes before a normalization (Li et al. 2019) against its formula."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, SMOKE, bnlab

from bnlab import FullyConnectedNet
from bnlab.figures import plot_experiment
from bnlab.lab.executors import make_executor
from bnlab.lab.runner import run_experiment
from bnlab.nn.variance_shift import dropout_variance_shift
from bnlab.results import load_experiment
from bnlab.spec.experiment import experiment_from_text


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_the_variance_a_norm_sees_after_dropout_follows_the_formula(keep):
    """On a large batch (20,000 samples) the training-time variance of every layer after a dropout
    is within 2% of test_var + (1/p - 1) sum_k W_k^2 E[x_k^2], and larger than at test time."""
    rng = np.random.RandomState(0)
    net = FullyConnectedNet([64, 64, 64], input_dim=32, normalization="batchnorm", dropout_keep_ratio=keep,
                            weight_scale="he", dtype=np.float64, seed=1)  # fmt: skip
    X = rng.randn(20000, 32) + 0.5
    rows = dropout_variance_shift(net, X, np.random.RandomState(1))
    assert [row["layer"] for row in rows] == [2, 3]
    for row in rows:
        assert abs(row["train_var"] / row["predicted_train_var"] - 1) < 0.02, row
        assert row["train_var"] > 1.2 * row["test_var"]  # the shift itself, far above sampling noise


def test_dropout_last_puts_it_after_every_normalization():
    net = FullyConnectedNet([8, 8, 8], input_dim=4, normalization="batchnorm", dropout_keep_ratio=0.5,
                            dropout_position="last", dtype=np.float64, seed=1)  # fmt: skip
    assert net.dropout_layers == {3}
    assert dropout_variance_shift(net, np.random.RandomState(0).randn(50, 4), np.random.RandomState(1)) == []
    # in training the last hidden layer's output is masked, the others are not
    net.layer_outputs = {}
    net.loss(np.random.RandomState(0).randn(50, 4), np.arange(50) % 10)
    assert (net.layer_outputs[3] == 0).mean() > 0.3 and (net.layer_outputs[2] > 0).mean() > 0.3


def test_dropout_position_is_a_spec_key_for_fully_connected_nets_only(tmp_path):
    spec = tmp_path / "d.yaml"
    spec.write_text(SMOKE.read_text())
    result = bnlab("plan", spec, "--set", "model.dropout_keep_ratio=0.5", "--set", "model.dropout_position=last")
    assert result.exit_code == 0, result.output
    result = bnlab("plan", spec, "--set", "model.dropout_position=first")
    assert result.exit_code == 2 and "dropout_position" in result.stderr and "'every' or 'last'" in result.stderr
    result = bnlab("plan", spec, "--set", "model.architecture=conv", "--set", "model.channels=[4]",
                   "--set", "model.dropout_position=last")  # fmt: skip
    assert result.exit_code == 2 and "the conv net has no dropout" in result.stderr


SHIFT_SPEC = """
name: shift
data: {num_train: 200, num_val: 50, num_test: 0}
model: {hidden_dims: [40, 40, 40], normalization: batchnorm, dropout_keep_ratio: 0.5}
solver: {update_rule: adam, optim_config: {learning_rate: 1.0e-3}, batch_size: 100, num_epochs: 4}
seeds: 1
record: {statistics: [shift_measured, shift_predicted], every: 1}
plots: [{kind: variance_shift}]
"""


def test_the_recorder_measures_the_shift_beside_the_formula_and_the_figure_draws_both(tmp_path, monkeypatch):
    """Every iteration, layers 2 and 3 (those after a dropout): the measured ratio follows the
    formula's (over the 8 iterations, within 10% on average), both above 1; recording changes no
    byte of the run's history."""
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    run_experiment(experiment_from_text(SHIFT_SPEC, "shift.yaml"), tmp_path / "on", make_executor(1))
    run_experiment(experiment_from_text(SHIFT_SPEC, "shift.yaml", ["record=null"]), tmp_path / "off", make_executor(1))
    probes = load_experiment(tmp_path / "on" / "shift").probes
    assert sorted(probes["layer"].unique()) == [2, 3] and sorted(probes["iteration"].unique()) == list(range(1, 9))
    ratios = probes.pivot_table(index=["iteration", "layer"], columns="statistic", values="value")
    assert (ratios["shift_predicted"] > 1.1).all()
    assert abs(ratios["shift_measured"].mean() / ratios["shift_predicted"].mean() - 1) < 0.1
    run = next((tmp_path / "on" / "shift").glob("*seed=0"))
    assert (run / "history.csv").read_bytes() == (tmp_path / "off" / "shift" / run.name / "history.csv").read_bytes()
    assert [p.name for p in plot_experiment(tmp_path / "on" / "shift")] == ["variance_shift.png"]
