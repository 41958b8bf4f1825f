"""Gradient accumulation (issue 30): K micro-batches per update train as one batch K times as large
(the same samples) where no layer uses batch statistics, to rounding in float64; with batch norm
they do not, since each micro-batch is normalized by its own statistics: that is ghost batch norm."""

from __future__ import annotations

import numpy as np
from conftest import bnlab, write

from bnlab import FullyConnectedNet, Solver


def train(normalization: str | None, batch_size: int, accumulate: int, **norm_options) -> Solver:
    rng = np.random.RandomState(0)
    data = {"X_train": rng.randn(96, 5), "y_train": rng.randint(3, size=96), "X_val": rng.randn(20, 5),
            "y_val": rng.randint(3, size=20)}  # fmt: skip
    net = FullyConnectedNet([8, 8], input_dim=5, num_classes=3, normalization=normalization, reg=0.1,
                            weight_scale=0.3, dtype=np.float64, seed=1, **norm_options)  # fmt: skip
    solver = Solver(net, data, update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=batch_size,
                    accumulate=accumulate, num_epochs=3, rng=np.random.RandomState(2))  # fmt: skip
    solver.train()
    return solver


def test_without_batch_statistics_accumulation_is_the_large_batch():
    large, accumulated = train(None, 24, 1), train(None, 8, 3)
    assert len(large.loss_history) == len(accumulated.loss_history) == 12  # 96 // 24 updates an epoch
    assert accumulated.iterations_per_epoch == large.iterations_per_epoch == 4  # history.csv's epochs too
    np.testing.assert_allclose(accumulated.loss_history, large.loss_history, rtol=1e-9)
    for name, value in large.model.params.items():
        np.testing.assert_allclose(accumulated.model.params[name], value, rtol=1e-9, atol=1e-12)


def test_with_batch_norm_it_is_not():
    large, accumulated = train("batchnorm", 24, 1), train("batchnorm", 8, 3)
    first = abs(accumulated.loss_history[0] - large.loss_history[0]) / large.loss_history[0]
    assert first > 1e-6  # 3 batches of 8 are normalized apart: another loss from the first step


def test_accumulate_is_a_solver_key_that_stays_out_of_configs_at_its_default(tmp_path):
    spec = write(tmp_path, "acc.yaml", "name: acc\nmodel: {hidden_dims: [4]}\nsolver: {batch_size: 10}\n"
                 "sweep: {solver.accumulate: [1, 4]}\n")  # fmt: skip
    from bnlab.spec.experiment import load_experiment

    configs = [run.config["solver"] for run in load_experiment(spec).runs]
    assert "accumulate" not in configs[0] and configs[1]["accumulate"] == 4
    result = bnlab("plan", spec, "--set", "solver.accumulate=0")
    assert result.exit_code == 2 and "solver.accumulate" in result.stderr


def test_with_batch_norm_accumulation_is_ghost_batch_norm():
    """K micro-batches of B, each normalized on its own, then averaged: the loss and gradient of
    ghost batch norm with virtual batches of B in one batch of K * B. The updates agree to rounding;
    the running statistics do not (K blends of the momentum against one of the virtual batches' mean)."""
    accumulated, ghost = train("batchnorm", 8, 3), train("ghost_batchnorm", 24, 1, ghost_batch_size=8)
    assert len(accumulated.loss_history) == len(ghost.loss_history) == 12
    np.testing.assert_allclose(accumulated.loss_history, ghost.loss_history, rtol=1e-9)
    # the best model of each kept its own running statistics: they differ
    assert not np.allclose(accumulated.model.bn_params[0]["running_var"], ghost.model.bn_params[0]["running_var"])
